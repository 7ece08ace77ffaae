"""A small, complete, test-only network driver ("kit-bridge") and its deliberately broken
variants: the kit's own proof that every check of ``BackendConformance`` can fail.

``KitBridgePlugin`` declares every capability the suite checks (``publishes_ports``,
``multiple_networks``, ``enforces_internal``, ``ipv6``, ``network_lifecycle``) and passes
the whole suite. It does its work with ``ip`` and ``nft`` commands, keeps its state in memory, and
rewrites its one nftables table (``inet kitbridge``) as a whole after every change:

* a network is a bridge ``kb<hash>`` carrying the gateway address (and the IPv6 gateway of
  a dual-stack network, ``nodad``);
* a container attachment is a veth ``kv<hash>`` on that bridge, its peer created directly
  in the container's netns, addresses (one per family) from :func:`nyx_core.allocate`;
* published ports are DNAT rules (prerouting and output, to the host's local addresses),
  egress of non-internal networks is masqueraded, an internal network's traffic to
  anything outside its subnet is dropped in the forward hook.

Each broken variant below overrides one small method and names the check it breaks. The
test ``conftest.py`` installs them all as entry points of ``nyx.net_drivers`` (a
dist-info on ``sys.path``), so the suite loads them by name exactly as it loads any driver.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

from nyx_core import (
    BackendCapabilities,
    BackendError,
    ConfigError,
    InterfaceResult,
    NetlinkError,
    NetworkInfo,
    NetworkSpec,
    NyxError,
    NyxSettings,
    PortConflictError,
    PortMapping,
    SetupOptions,
    SetupResult,
    TeardownError,
    allocate,
    hookimpl,
)

TABLE = "inet kitbridge"
_ID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
_IFNAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,14}$")


def _h(text: str, n: int) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def run(argv: Sequence[str], stdin: str | None = None) -> str:
    """Run a command; a failure is a NetlinkError naming it and its stderr."""
    proc = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise NetlinkError(f"kit-bridge: {' '.join(argv)} failed: {proc.stderr.strip()}")
    return proc.stdout


def make_veth(att: Att) -> None:
    """The veth pair, its peer created directly in the container's netns as ``att.interface``."""
    peer = ["peer", "name", att.interface, "netns", att.netns]
    if att.mac is not None:
        peer[3:3] = ["address", att.mac]
    run(["ip", "link", "add", att.veth, "type", "veth", *peer])


def in_container(netns_path: str, lines: Sequence[str]) -> None:
    """``ip -batch`` inside the container's netns (by path, as nyxd hands it over)."""
    run(["nsenter", f"--net={netns_path}", "ip", "-batch", "-"], "\n".join(lines) + "\n")


@dataclass(frozen=True)
class Net:
    name: str
    bridge: str
    gateway: ipaddress.IPv4Interface
    internal: bool
    gateway6: ipaddress.IPv6Interface | None = None

    def info(self) -> NetworkInfo:
        return NetworkInfo(
            name=self.name,
            subnet=self.gateway.network,
            gateway=self.gateway.ip,
            subnet6=self.gateway6.network if self.gateway6 else None,
            gateway6=self.gateway6.ip if self.gateway6 else None,
            internal=self.internal,
            interface=self.bridge,
        )


@dataclass
class Att:
    container_id: str
    network: str
    ip: ipaddress.IPv4Address
    veth: str
    interface: str
    netns: str
    ports: list[PortMapping] = field(default_factory=list)
    mac: str | None = None
    ip6: ipaddress.IPv6Address | None = None


class KitBridgePlugin:
    """The reference driver of the kit's own tests (entry point ``kit-bridge``)."""

    capabilities = BackendCapabilities(
        publishes_ports=True,
        multiple_networks=True,
        enforces_internal=True,
        ipv6=True,
        network_lifecycle=True,
        static_addresses=True,
    )

    def __init__(self) -> None:
        self.nets: dict[str, Net] = {}
        self.atts: dict[tuple[str, str], Att] = {}
        self.leases: dict[str, set[str]] = {}
        self.cursor: dict[str, str] = {}
        self.lock = threading.RLock()

    # ------------------------------------------------------------ overridable steps

    def setup_lock(self) -> AbstractContextManager[object]:
        return self.lock

    def lease(
        self, net: Net, cid: str, static: ipaddress.IPv4Address | None = None
    ) -> ipaddress.IPv4Address:
        used = self.leases.setdefault(net.name, set())
        ip = allocate(net.gateway.network, net.gateway.ip, used, static, self.cursor.get(net.name))
        assert isinstance(ip, ipaddress.IPv4Address)
        used.add(str(ip))
        if static is None:
            self.cursor[net.name] = str(ip)
        return ip

    def lease6(
        self, net: Net, static: ipaddress.IPv6Address | None = None
    ) -> ipaddress.IPv6Address | None:
        if net.gateway6 is None:
            if static is not None:
                raise ConfigError(f"kit-bridge: {static} is IPv6, network {net.name!r} is not")
            return None
        key = f"{net.name}/6"
        used = self.leases.setdefault(key, set())
        ip = allocate(net.gateway6.network, net.gateway6.ip, used, static, self.cursor.get(key))
        assert isinstance(ip, ipaddress.IPv6Address)
        used.add(str(ip))
        if static is None:
            self.cursor[key] = str(ip)
        return ip

    def release(self, att: Att) -> None:
        self.leases.get(att.network, set()).discard(str(att.ip))
        self.leases.get(f"{att.network}/6", set()).discard(str(att.ip6))

    def bridge_lines(self, net: Net) -> list[str]:
        lines = [
            f"link add {net.bridge} type bridge",
            f"addr add {net.gateway} dev {net.bridge}",
        ]
        if net.gateway6 is not None:
            lines.append(f"addr add {net.gateway6} dev {net.bridge} nodad")
        return [*lines, f"link set {net.bridge} up"]

    def create_link(self, att: Att, net: Net) -> None:
        make_veth(att)
        run(["ip", "link", "set", att.veth, "master", net.bridge, "up"])

    def container_lines(self, att: Att, net: Net, first: bool) -> list[str]:
        lines = [f"addr add {att.ip}/{net.gateway.network.prefixlen} dev {att.interface}"]
        if att.ip6 is not None and net.gateway6 is not None:
            lines.append(self.addr6_line(att, net))
        lines.append(f"link set {att.interface} up")
        if first:
            lines.append(f"route add default via {net.gateway.ip} dev {att.interface}")
            if net.gateway6 is not None:
                lines.append(f"route add default via {net.gateway6.ip} dev {att.interface}")
        return lines

    def addr6_line(self, att: Att, net: Net) -> str:
        assert net.gateway6 is not None
        return f"addr add {att.ip6}/{net.gateway6.network.prefixlen} dev {att.interface} nodad"

    def delete_link(self, att: Att) -> None:
        proc = subprocess.run(["ip", "link", "del", att.veth], capture_output=True, text=True)
        if proc.returncode != 0 and "Cannot find device" not in proc.stderr:
            raise NetlinkError(f"kit-bridge: ip link del {att.veth}: {proc.stderr.strip()}")

    def result(self, att: Att, net: Net) -> SetupResult:
        addresses: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = [
            ipaddress.IPv4Interface(f"{att.ip}/{net.gateway.network.prefixlen}")
        ]
        if att.ip6 is not None and net.gateway6 is not None:
            addresses.append(ipaddress.IPv6Interface(f"{att.ip6}/{net.gateway6.network.prefixlen}"))
        return SetupResult(
            container_id=att.container_id,
            network=net.name,
            interfaces=[InterfaceResult(name=att.interface, addresses=addresses)],
            gateway=net.gateway.ip,
            dns_server=net.gateway.ip,
            internal=net.internal,
        )

    def check_ports(self, ports: Sequence[PortMapping]) -> None:
        taken = {
            (p.protocol, p.host_port): a.container_id for a in self.atts.values() for p in a.ports
        }
        for p in ports:
            owner = taken.get((p.protocol, p.host_port))
            if owner is not None:
                raise PortConflictError(
                    f"kit-bridge: port {p.host_port}/{p.protocol} is published by {owner!r}"
                )

    def rollback(self, undo: list[Callable[[], None]]) -> None:
        for fn in reversed(undo):
            try:
                fn()
            except NyxError:
                pass

    def nft_rules(self) -> dict[str, list[str]]:
        chains: dict[str, list[str]] = {"pre": [], "out": [], "post": [], "fwd": []}
        for att in sorted(self.atts.values(), key=lambda a: (a.container_id, a.network)):
            for p in att.ports:
                for rule in self.port_rules(att, p):
                    chains["pre"].append(rule)
                    chains["out"].append(rule)
        for net in sorted(self.nets.values(), key=lambda n: n.name):
            nets = [("ip", net.gateway.network)]
            if net.gateway6 is not None:
                nets.append(("ip6", net.gateway6.network))
            for fam, subnet in nets:
                if net.internal:
                    chains["fwd"].append(f"{fam} saddr {subnet} {fam} daddr != {subnet} drop")
                else:
                    chains["post"].append(
                        f'{fam} saddr {subnet} oifname != {{ "{net.bridge}", "lo" }} masquerade'
                    )
        return chains

    def port_rules(self, att: Att, p: PortMapping) -> list[str]:
        """DNAT of one published port, per family the container has (no host IP: both)."""
        out = []
        targets = [("ip", "ipv4", str(att.ip))]
        if att.ip6 is not None:
            targets.append(("ip6", "ipv6", f"[{att.ip6}]"))
        for fam, proto, target in targets:
            if p.host_ip is None:
                dest = f"meta nfproto {proto} fib daddr type local"
            elif (p.host_ip.version == 6) == (fam == "ip6"):
                dest = f"{fam} daddr {p.host_ip}"
            else:
                continue
            out.append(
                f"{dest} meta l4proto {p.protocol} th dport {p.host_port} "
                f"dnat {fam} to {target}:{p.container_port}"
            )
        return out

    def sync_nft(self) -> None:
        """Write the whole table in one transaction."""
        hooks = {
            "pre": "type nat hook prerouting priority -100; policy accept;",
            "out": "type nat hook output priority -100; policy accept;",
            "post": "type nat hook postrouting priority 100; policy accept;",
            "fwd": "type filter hook forward priority 0; policy accept;",
        }
        rules = self.nft_rules()
        body = "".join(
            f"  chain kb_{name} {{\n    {hook}\n"
            + "".join(f"    {r}\n" for r in rules.get(name, []))
            + "  }\n"
            for name, hook in hooks.items()
        )
        extra = "".join(f"  chain kb_{name} {{\n{text}  }}\n" for name, text in self.nft_extra())
        run(
            ["nft", "-f", "-"],
            f"table {TABLE}\ndelete table {TABLE}\ntable {TABLE} {{\n{body}{extra}}}\n",
        )

    def nft_extra(self) -> list[tuple[str, str]]:
        return []

    # ------------------------------------------------------------------ hooks

    @hookimpl
    def nyx_backend_capabilities(self) -> BackendCapabilities:
        return self.capabilities

    @hookimpl
    def nyx_backend_ensure_network(
        self, settings: NyxSettings, options: Mapping[str, str]
    ) -> object:
        if options:
            raise ConfigError(f"kit-bridge: unknown option(s) {', '.join(sorted(options))}")
        with self.lock:
            with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
                f.write("1")
            if settings.container_subnet6 is not None:
                with open("/proc/sys/net/ipv6/conf/all/forwarding", "w") as f:
                    f.write("1")
            self.sync_nft()
        return True

    @hookimpl
    def nyx_backend_network_create(self, network: NetworkSpec) -> NetworkInfo:
        self.validate_network(network)
        gw = network.gateway_interface
        assert gw is not None
        gw6 = network.gateway_interface6
        with self.lock:
            have = self.nets.get(network.name)
            if have is not None:
                if (have.gateway, have.gateway6, have.internal) == (gw, gw6, network.internal):
                    return have.info()
                raise ConfigError(
                    f"kit-bridge: network {network.name!r} exists with subnet {have.gateway}"
                    f"{' (internal)' if have.internal else ''}"
                )
            for other in self.nets.values():
                if other.gateway.network.overlaps(gw.network):
                    raise ConfigError(
                        f"kit-bridge: network {network.name!r}: subnet {gw.network} overlaps "
                        f"network {other.name!r}"
                    )
            net = Net(network.name, "kb" + _h(network.name, 8), gw, network.internal, gw6)
            try:
                run(["ip", "-batch", "-"], "\n".join(self.bridge_lines(net)) + "\n")
                self.nets[net.name] = net
                self.sync_nft()
            except BaseException:
                self.nets.pop(net.name, None)
                subprocess.run(["ip", "link", "del", net.bridge], capture_output=True)
                raise
            return net.info()

    def validate_network(self, network: NetworkSpec) -> None:
        if network.options:
            raise ConfigError(
                f"kit-bridge: network {network.name!r}: unknown option(s) "
                f"{', '.join(sorted(network.options))}"
            )
        if network.subnet is None:
            raise ConfigError(f"kit-bridge: network {network.name!r}: subnet is required")
        if network.internal and not self.capabilities.enforces_internal:
            raise ConfigError(f"kit-bridge: network {network.name!r}: internal is not supported")

    @hookimpl
    def nyx_backend_network_remove(self, name: str) -> object:
        with self.lock:
            net = self.nets.pop(name, None)
            if net is not None:
                self.remove_bridge(net)
                self.leases.pop(name, None)
                self.cursor.pop(name, None)
                self.sync_nft()
        return True

    def remove_bridge(self, net: Net) -> None:
        run(["ip", "link", "del", net.bridge])

    @hookimpl
    def nyx_backend_setup(
        self,
        container_id: str,
        netns_path: str,
        ports: Sequence[PortMapping],
        opts: SetupOptions,
    ) -> SetupResult:
        if not _ID.match(container_id):
            raise ConfigError(f"kit-bridge: container_id {container_id!r} is not valid")
        if not _IFNAME.match(opts.interface):
            raise ConfigError(f"kit-bridge: interface {opts.interface!r} is not valid")
        for p in ports:
            if p.range != 1:
                raise ConfigError(f"kit-bridge: port mapping {p}: ranges are not supported")
        with self.setup_lock():
            net = self.nets.get(opts.network)
            if net is None:
                raise ConfigError(f"kit-bridge: network {opts.network!r} was not created")
            if opts.subnet is not None and opts.subnet != net.gateway:
                raise ConfigError(
                    f"kit-bridge: network {net.name!r} has subnet {net.gateway}, not {opts.subnet}"
                )
            key = (container_id, net.name)
            if key in self.atts:
                return self.second_setup(key, net)
            self.validate_netns(netns_path)
            self.check_ports(ports)
            first = not any(k[0] == container_id for k in self.atts)
            static, static6 = self.static_ip(opts), self.static_ip6(opts)
            ip = self.lease(net, container_id, static)
            try:
                ip6 = self.lease6(net, static6)
            except BaseException:
                self.leases[net.name].discard(str(ip))
                raise
            att = Att(
                container_id,
                net.name,
                ip,
                "kv" + _h(f"{container_id}/{net.name}", 10),
                opts.interface,
                netns_path,
                list(ports),
                self.mac(opts),
                ip6,
            )
            self.atts[key] = att
            undo: list[Callable[[], None]] = [lambda: self.forget(key)]
            try:
                self.create_link(att, net)
                undo.append(lambda: self.delete_link(att))
                lines = self.container_lines(att, net, first)
                if lines:
                    in_container(netns_path, lines)
                self.sync_nft()
            except BaseException as exc:
                self.rollback(undo)
                if isinstance(exc, NyxError):
                    raise
                raise BackendError(f"kit-bridge: setup of {container_id!r}: {exc!r}") from exc
            return self.result(att, net)

    def static_ip(self, opts: SetupOptions) -> ipaddress.IPv4Address | None:
        return opts.static_v4

    def static_ip6(self, opts: SetupOptions) -> ipaddress.IPv6Address | None:
        return opts.static_v6

    def mac(self, opts: SetupOptions) -> str | None:
        return opts.mac

    def validate_netns(self, netns_path: str) -> None:
        if not os.path.exists(netns_path):
            raise NetlinkError(f"kit-bridge: netns {netns_path!r} does not exist")

    def second_setup(self, key: tuple[str, str], net: Net) -> SetupResult:
        raise BackendError(f"kit-bridge: container {key[0]!r} is already on network {net.name!r}")

    def forget(self, key: tuple[str, str]) -> None:
        att = self.atts.pop(key, None)
        if att is not None:
            self.release(att)

    @hookimpl
    def nyx_backend_teardown(self, container_id: str, netns_path: str) -> object:
        errors: list[BaseException] = []
        with self.lock:
            keys = self.teardown_keys(container_id)
            for key in keys:
                att = self.atts[key]
                try:
                    self.delete_link(att)
                except NyxError as exc:
                    errors.append(exc)
                self.forget(key)
            if keys:
                try:
                    self.sync_nft()
                except NyxError as exc:
                    errors.append(exc)
        if errors:
            raise TeardownError(f"container {container_id!r}", errors)
        return True

    def teardown_keys(self, container_id: str) -> list[tuple[str, str]]:
        return [k for k in self.atts if k[0] == container_id]

    @hookimpl
    def nyx_backend_gc(self, container_ids: Sequence[str]) -> object:
        keep = set(container_ids)
        with self.lock:
            gone = {k[0] for k in self.atts if k[0] not in keep}
        for cid in sorted(gone):
            self.nyx_backend_teardown(cid, "")
        return sorted(gone)


# ------------------------------------------------------------------ broken variants


class NotIdempotentEnsure(KitBridgePlugin):
    """Breaks test_ensure_network_is_idempotent: every ensure adds another bridge."""

    calls = 0

    @hookimpl
    def nyx_backend_ensure_network(
        self, settings: NyxSettings, options: Mapping[str, str]
    ) -> object:
        super().nyx_backend_ensure_network(settings, options)
        NotIdempotentEnsure.calls += 1
        run(["ip", "link", "add", f"kbens{NotIdempotentEnsure.calls}", "type", "bridge"])
        return True


class KeepsHostVeth(KitBridgePlugin):
    """Breaks test_setup_then_teardown_leaves_host_as_it_was: the host veth stays."""

    def delete_link(self, att: Att) -> None:
        pass


class LeavesLinkInContainer(KitBridgePlugin):
    """Breaks test_teardown_leaves_the_container_as_it_was: a veth pair (as a macvlan
    would) is made inside the container and never removed."""

    def container_lines(self, att: Att, net: Net, first: bool) -> list[str]:
        return [
            *super().container_lines(att, net, first),
            "link add kitleft0 type veth peer name kitleft1",
        ]


class TeardownOfUnknownFails(KitBridgePlugin):
    """Breaks test_teardown_twice_and_never_set_up: teardown of a container it does not
    know is an error."""

    @hookimpl
    def nyx_backend_teardown(self, container_id: str, netns_path: str) -> object:
        if not self.teardown_keys(container_id):
            raise TeardownError(f"container {container_id!r}", [BackendError("not set up")])
        return super().nyx_backend_teardown(container_id, netns_path)


class SecondSetupSucceeds(KitBridgePlugin):
    """Breaks test_second_setup_of_the_same_attachment_is_refused: answers again."""

    def validate_netns(self, netns_path: str) -> None:
        if not os.path.exists(netns_path):
            raise NetlinkError(f"kit-bridge: netns {netns_path!r} does not exist")

    def second_setup(self, key: tuple[str, str], net: Net) -> SetupResult:
        return self.result(self.atts[key], net)


class TeardownNeedsTheNetns(KitBridgePlugin):
    """Breaks test_teardown_after_netns_is_gone: refuses when the netns is gone, and
    releases nothing."""

    @hookimpl
    def nyx_backend_teardown(self, container_id: str, netns_path: str) -> object:
        if self.teardown_keys(container_id) and not os.path.exists(netns_path):
            raise TeardownError(f"container {container_id!r}", [NetlinkError("no netns")])
        return super().nyx_backend_teardown(container_id, netns_path)


class FailsOnStaleNetns(KitBridgePlugin):
    """Breaks test_teardown_when_the_netns_is_a_stale_file: deletes the container side
    first, entering the netns whenever its path exists, and fails when it is a plain file."""

    def delete_link(self, att: Att) -> None:
        if os.path.exists(att.netns):
            in_container(att.netns, [f"link del {att.interface}"])
        super().delete_link(att)


class AcceptsStaleNetns(KitBridgePlugin):
    """Breaks test_setup_on_a_stale_netns_file_is_refused: creates the pair on the host,
    moves the peer, and ignores a failed move (the host keeps both ends)."""

    def create_link(self, att: Att, net: Net) -> None:
        peer = "kp" + att.veth[2:]
        run(["ip", "link", "add", att.veth, "type", "veth", "peer", "name", peer])
        run(["ip", "link", "set", att.veth, "master", net.bridge, "up"])
        moved = subprocess.run(["ip", "link", "set", peer, "netns", att.netns], capture_output=True)
        if moved.returncode == 0:
            in_container(att.netns, [f"link set {peer} name {att.interface}"])

    def container_lines(self, att: Att, net: Net, first: bool) -> list[str]:
        return []


class NoRollback(KitBridgePlugin):
    """Breaks test_failed_setup_leaves_nothing: checks the netns only by using it, and a
    setup failing there keeps its lease and ports."""

    def validate_netns(self, netns_path: str) -> None:
        pass

    def rollback(self, undo: list[Callable[[], None]]) -> None:
        pass


class RacyLeases(KitBridgePlugin):
    """Breaks test_concurrent_setups_get_distinct_addresses: no lock, and the lease is
    chosen a moment before it is recorded."""

    def setup_lock(self) -> AbstractContextManager[object]:
        return nullcontext()

    def lease(
        self, net: Net, cid: str, static: ipaddress.IPv4Address | None = None
    ) -> ipaddress.IPv4Address:
        used = set(self.leases.setdefault(net.name, set()))
        ip = allocate(net.gateway.network, net.gateway.ip, used)
        assert isinstance(ip, ipaddress.IPv4Address)
        time.sleep(0.3)
        self.leases[net.name].add(str(ip))
        return ip


class NeverReleases(KitBridgePlugin):
    """Breaks test_leases_are_released_and_reused: teardown never releases the lease."""

    def release(self, att: Att) -> None:
        pass


class ReportsWrongPrefix(KitBridgePlugin):
    """Breaks test_setup_result_describes_the_container: reports /32, configures /24."""

    def result(self, att: Att, net: Net) -> SetupResult:
        res = super().result(att, net)
        res.interfaces[0].addresses = [ipaddress.IPv4Interface(f"{att.ip}/32")]
        return res


class LeavesInterfaceDown(KitBridgePlugin):
    """Breaks test_interfaces_are_up_with_a_default_route: eth0 stays down (so there is
    no default route either)."""

    def container_lines(self, att: Att, net: Net, first: bool) -> list[str]:
        return [f"addr add {att.ip}/{net.gateway.network.prefixlen} dev {att.interface}"]


class NoDefaultRoute(KitBridgePlugin):
    """Breaks test_interfaces_are_up_with_a_default_route: reports a gateway but routes
    nothing through it."""

    def container_lines(self, att: Att, net: Net, first: bool) -> list[str]:
        return super().container_lines(att, net, False)


class HostSideDown(KitBridgePlugin):
    """Breaks test_interfaces_are_up_with_a_default_route: the host end of the veth is
    left down, so eth0 has no carrier."""

    def create_link(self, att: Att, net: Net) -> None:
        make_veth(att)
        run(["ip", "link", "set", att.veth, "master", net.bridge])

    def container_lines(self, att: Att, net: Net, first: bool) -> list[str]:
        return super().container_lines(att, net, False)  # no route: the link has no carrier


class IsolatesContainers(KitBridgePlugin):
    """Breaks test_two_containers_exchange_a_packet: bridge ports are isolated from each
    other (each still reaches the host)."""

    def create_link(self, att: Att, net: Net) -> None:
        super().create_link(att, net)
        run(["ip", "link", "set", att.veth, "type", "bridge_slave", "isolated", "on"])


class GatewayAddedLate(KitBridgePlugin):
    """Breaks test_gateway_ip_is_on_a_host_link: the bridge gets its gateway address only
    at the first setup (as CNI's bridge plugin does), too late for the DNS provider."""

    def bridge_lines(self, net: Net) -> list[str]:
        return [line for line in super().bridge_lines(net) if not line.startswith("addr add")]

    def create_link(self, att: Att, net: Net) -> None:
        run(["ip", "addr", "replace", str(net.gateway), "dev", net.bridge])
        super().create_link(att, net)


class NatsToTheGateway(KitBridgePlugin):
    """Breaks test_gateway_ip_is_on_a_host_link: containers' traffic to the host is
    source-NATed to the gateway (the DNS provider could not tell containers apart)."""

    def nft_extra(self) -> list[tuple[str, str]]:
        return [
            (
                "in",
                "    type nat hook input priority 100; policy accept;\n"
                + "".join(
                    f"    ip saddr {n.gateway.network} snat ip to {n.gateway.ip}\n"
                    for n in self.nets.values()
                ),
            )
        ]


class AllowsPortConflicts(KitBridgePlugin):
    """Breaks test_port_conflict_is_refused_and_changes_nothing."""

    def check_ports(self, ports: Sequence[PortMapping]) -> None:
        pass


class ReportsNoGateway(KitBridgePlugin):
    """Breaks test_published_port_answers_on_the_gateway_address: declares
    publishes_ports but reports no gateway (used to be a silent skip)."""

    def result(self, att: Att, net: Net) -> SetupResult:
        return super().result(att, net).model_copy(update={"gateway": None, "dns_server": None})


class IgnoresPorts(KitBridgePlugin):
    """Breaks test_published_port_answers_on_the_gateway_address: declares
    publishes_ports, publishes nothing."""

    def nft_rules(self) -> dict[str, list[str]]:
        rules = super().nft_rules()
        rules["pre"], rules["out"] = [], []
        return rules


class LeavesBridgeOnRemove(KitBridgePlugin):
    """Breaks test_network_create_and_remove_leave_the_host_as_it_was."""

    def remove_bridge(self, net: Net) -> None:
        pass


class AcceptsUnknownOptions(KitBridgePlugin):
    """Breaks test_network_create_refuses_what_it_cannot_honour: ignores options."""

    def validate_network(self, network: NetworkSpec) -> None:
        super().validate_network(network.model_copy(update={"options": {}}))


class InternalWithoutEnforcing(KitBridgePlugin):
    """Breaks test_network_create_refuses_what_it_cannot_honour: does not declare
    enforces_internal, yet creates internal networks (that would not be internal)."""

    capabilities = KitBridgePlugin.capabilities.model_copy(update={"enforces_internal": False})

    def validate_network(self, network: NetworkSpec) -> None:
        super().validate_network(network.model_copy(update={"internal": False}))


class TeardownOnlyFirstNetwork(KitBridgePlugin):
    """Breaks test_container_on_two_networks: teardown forgets all but the first network."""

    def teardown_keys(self, container_id: str) -> list[tuple[str, str]]:
        return super().teardown_keys(container_id)[:1]


class IgnoresInternal(KitBridgePlugin):
    """Breaks test_internal_network_reaches_a_peer_but_not_the_internet: declares
    enforces_internal, drops nothing."""

    def nft_rules(self) -> dict[str, list[str]]:
        rules = super().nft_rules()
        rules["fwd"] = []
        return rules


class IgnoresStaticAddresses(KitBridgePlugin):
    """Breaks test_static_address_and_mac_are_honoured: declares static_addresses, then
    hands out the next free address and a random MAC (as the CNI driver would)."""

    def static_ip(self, opts: SetupOptions) -> ipaddress.IPv4Address | None:
        return None

    def mac(self, opts: SetupOptions) -> str | None:
        return None


class IgnoresStaticIpv6(KitBridgePlugin):
    """Breaks test_static_ipv6_address_is_honoured: declares static_addresses and ipv6,
    honours a static IPv4 address, and hands out the next free IPv6 one whatever was
    asked for."""

    def static_ip6(self, opts: SetupOptions) -> ipaddress.IPv6Address | None:
        return None


class Ipv6AfterDad(KitBridgePlugin):
    """Breaks test_ipv6_addresses_of_both_families_and_a_default_route: the IPv6 address
    waits for duplicate address detection (tentative for a second or more)."""

    def addr6_line(self, att: Att, net: Net) -> str:
        return super().addr6_line(att, net).removesuffix(" nodad")


class NoDefaultRoute6(KitBridgePlugin):
    """Breaks test_ipv6_addresses_of_both_families_and_a_default_route: an IPv6 address,
    but the default route is IPv4 only."""

    def container_lines(self, att: Att, net: Net, first: bool) -> list[str]:
        gw6 = str(net.gateway6.ip) if net.gateway6 else "-"
        return [ln for ln in super().container_lines(att, net, first) if gw6 not in ln]


class BridgesIpv4Only(KitBridgePlugin):
    """Breaks test_two_containers_exchange_a_packet_over_ipv6: addresses of both families,
    but the host's bridges forward no IPv6 frame (a bridge-family drop)."""

    def sync_nft(self) -> None:
        super().sync_nft()
        run(
            ["nft", "-f", "-"],
            "table bridge kitbridge6\ndelete table bridge kitbridge6\n"
            "table bridge kitbridge6 {\n  chain kb6 {\n"
            "    type filter hook forward priority 0; policy accept;\n"
            "    ether type ip6 drop\n  }\n}\n",
        )


class PublishesIpv4Only(KitBridgePlugin):
    """Breaks test_published_port_answers_over_ipv6: a dual-stack container's published
    port is DNAT'd for IPv4 only."""

    def port_rules(self, att: Att, p: PortMapping) -> list[str]:
        return [r for r in super().port_rules(att, p) if "dnat ip to" in r]


class MissingTeardown:
    """Breaks test_loads_and_implements_every_backend_hook: no nyx_backend_teardown."""

    @hookimpl
    def nyx_backend_ensure_network(
        self, settings: NyxSettings, options: Mapping[str, str]
    ) -> object:
        return True

    @hookimpl
    def nyx_backend_setup(
        self,
        container_id: str,
        netns_path: str,
        ports: Sequence[PortMapping],
        opts: SetupOptions,
    ) -> SetupResult:
        raise BackendError("kit-missing-teardown: never sets anything up")


VARIANTS: dict[str, type[object]] = {
    "kit-bridge": KitBridgePlugin,
    "kit-not-idempotent-ensure": NotIdempotentEnsure,
    "kit-keeps-host-veth": KeepsHostVeth,
    "kit-leaves-link-in-container": LeavesLinkInContainer,
    "kit-teardown-of-unknown-fails": TeardownOfUnknownFails,
    "kit-second-setup-succeeds": SecondSetupSucceeds,
    "kit-teardown-needs-the-netns": TeardownNeedsTheNetns,
    "kit-fails-on-stale-netns": FailsOnStaleNetns,
    "kit-accepts-stale-netns": AcceptsStaleNetns,
    "kit-no-rollback": NoRollback,
    "kit-racy-leases": RacyLeases,
    "kit-never-releases": NeverReleases,
    "kit-reports-wrong-prefix": ReportsWrongPrefix,
    "kit-leaves-interface-down": LeavesInterfaceDown,
    "kit-no-default-route": NoDefaultRoute,
    "kit-host-side-down": HostSideDown,
    "kit-isolates-containers": IsolatesContainers,
    "kit-gateway-added-late": GatewayAddedLate,
    "kit-nats-to-the-gateway": NatsToTheGateway,
    "kit-allows-port-conflicts": AllowsPortConflicts,
    "kit-reports-no-gateway": ReportsNoGateway,
    "kit-ignores-ports": IgnoresPorts,
    "kit-leaves-bridge-on-remove": LeavesBridgeOnRemove,
    "kit-accepts-unknown-options": AcceptsUnknownOptions,
    "kit-internal-without-enforcing": InternalWithoutEnforcing,
    "kit-teardown-only-first-network": TeardownOnlyFirstNetwork,
    "kit-ignores-internal": IgnoresInternal,
    "kit-ignores-static-addresses": IgnoresStaticAddresses,
    "kit-ignores-static-ipv6": IgnoresStaticIpv6,
    "kit-ipv6-after-dad": Ipv6AfterDad,
    "kit-no-default-route6": NoDefaultRoute6,
    "kit-bridges-ipv4-only": BridgesIpv4Only,
    "kit-publishes-ipv4-only": PublishesIpv4Only,
    "kit-missing-teardown": MissingTeardown,
}
"""Entry point name -> class; ``conftest.py`` installs them all."""
