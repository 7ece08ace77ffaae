"""The native driver: bridge + veth + IPAM + nftables map elements, all in-process."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger

from nyx_core import (
    InterfaceResult,
    NyxSettings,
    PortMapping,
    SetupOptions,
    SetupResult,
    check_subnet_on_host,
    port_ranges,
    published_count,
)
from nyx_core.errors import (
    BackendError,
    ConfigError,
    FirewallError,
    NetlinkError,
    NyxError,
    TeardownError,
)

from . import _netlink as nl
from ._firewall import Firewall, PortElement, container_batch, network_elements, port_elements
from ._ipam import StateStore, allocate
from ._kernel import check_kernel, set_sysctl
from ._ports import check_conflicts, reserve
from ._settings import NativeSettings

__all__ = ["NativeDriver", "bridge_name", "veth_name"]

_ID_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
_IFNAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,14}$")
_NET_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_NFT_HINT = (
    " (the kernel needs nf_tables with nat, masquerade, fib and conntrack: "
    "`modprobe nf_tables nft_chain_nat nft_masq nft_fib_ipv4 nft_ct`; "
    "see docs/kernel-requirements.md)"
)


def _h(text: str, n: int) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def veth_name(container_id: str, network: str) -> str:
    """Host-side veth name: ``nv`` + 12 hex digits of the (container, network) hash."""
    return "nv" + _h(f"{container_id}/{network}", 12)


def bridge_name(network: str) -> str:
    """Bridge of a non-default network: ``nyx-<name>`` or, when too long, shortened + hash."""
    cand = f"nyx-{network}"
    if _IFNAME_RE.match(cand):
        return cand
    return f"nyx-{network[:4]}-{_h(network, 6)}"


def _bridge_sysctls(bridge: str) -> None:
    # 127.0.0.1:PORT publishing needs local-net addresses routed out of the bridge. Its
    # price (a container sending to the host's 127.0.0.1, CVE-2020-8558) is paid by the
    # table's guard chain, which drops 127.0.0.0/8 arriving on any link but lo: ensure the
    # table before calling this.
    set_sysctl(f"net.ipv4.conf.{bridge}.route_localnet", "1")
    # IPv4 only: no link-local address or fe80::/64 route appearing with the first port
    if os.path.exists(f"/proc/sys/net/ipv6/conf/{bridge}/disable_ipv6"):
        set_sysctl(f"net.ipv6.conf.{bridge}.disable_ipv6", "1")


@dataclass(frozen=True)
class Network:
    name: str
    bridge: str
    gateway: ipaddress.IPv4Interface
    default: bool

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return self.gateway.network

    def record(self) -> dict[str, Any]:
        return {"bridge": self.bridge, "gateway": str(self.gateway), "default": self.default}

    @classmethod
    def from_record(cls, name: str, rec: dict[str, Any]) -> Network:
        return cls(name, rec["bridge"], ipaddress.IPv4Interface(rec["gateway"]), rec["default"])


def _pel(p: list[Any]) -> PortElement:
    return PortElement(p[0], p[1], p[2], p[3], p[4])


def _pel_list(p: PortElement) -> list[Any]:
    return [p.host_ip, p.protocol, p.host_port, p.container_ip, p.container_port]


class NativeDriver:
    """One instance per process; ``ensure_network`` binds it to the daemon's settings."""

    def __init__(self, firewall: Firewall | None = None) -> None:
        self.firewall = firewall or Firewall()
        self._settings: NyxSettings | None = None
        self._store: StateStore | None = None
        # attachment key -> sockets holding its published host ports
        self._reserved: dict[str, list[socket.socket]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ helpers

    @property
    def store(self) -> StateStore:
        if self._store is None:
            raise BackendError("native driver: nyx_backend_ensure_network was not called")
        return self._store

    @property
    def settings(self) -> NyxSettings:
        if self._settings is None:
            raise BackendError("native driver: nyx_backend_ensure_network was not called")
        return self._settings

    def _default_network(self) -> Network:
        s = self.settings
        return Network(s.network, s.plugin(NativeSettings).bridge, s.gateway_interface, True)

    def _network_for(self, opts: SetupOptions) -> Network:
        s = self.settings
        if opts.network == s.network:
            if opts.subnet is not None and opts.subnet != s.gateway_interface:
                raise ConfigError(
                    f"network {opts.network!r}: subnet {opts.subnet} differs from the default "
                    f"network's {s.gateway_interface}"
                )
            return self._default_network()
        if not _NET_RE.match(opts.network):
            raise ConfigError(f"network {opts.network!r} is not a valid network name")
        if opts.subnet is None:
            raise ConfigError(
                f"network {opts.network!r}: subnet (gateway/prefix, e.g. 10.89.1.1/24) is "
                "required for a non-default network"
            )
        if not isinstance(opts.subnet, ipaddress.IPv4Interface):
            raise ConfigError(f"network {opts.network!r}: subnet {opts.subnet} is not IPv4")
        gw = opts.subnet
        if gw.ip in (gw.network.network_address, gw.network.broadcast_address):
            raise ConfigError(
                f"network {opts.network!r}: subnet {gw} must be the gateway address with its "
                "prefix (e.g. 10.89.1.1/24), not the network address"
            )
        if gw.network.prefixlen > 30:
            raise ConfigError(f"network {opts.network!r}: subnet {gw} is too small (need /30)")
        return Network(opts.network, bridge_name(opts.network), gw, False)

    # ------------------------------------------------------------------ ensure

    def ensure_network(self, settings: NyxSettings) -> dict[str, Any]:
        check_kernel()
        bridge = settings.plugin(NativeSettings).bridge
        net = Network(settings.network, bridge, settings.gateway_interface, True)
        store = StateStore(Path(settings.state_dir))
        # before anything changes: the default subnet must not take the host's traffic
        with store.locked(write=False) as st:
            own = {net.bridge} | {r["bridge"] for r in st["networks"].values()}
        check_subnet_on_host(
            net.subnet,
            f"default network {net.name!r} (NYXD_CONTAINER_SUBNET)",
            ignore_devs=own,
        )
        nl.check_veth_support()
        try:
            # the table first: its guard must drop 127.0.0.0/8 from outside before any
            # bridge gets route_localnet, and nothing is forwarded before the masquerade
            # and isolation rules exist
            self.firewall.ensure()
            set_sysctl("net.ipv4.ip_forward", "1")
            nl.ensure_bridge(net.bridge, net.gateway)
            _bridge_sysctls(net.bridge)
            self.firewall.run(
                network_elements("add", net.bridge, net.subnet), f"network {net.name!r}"
            )
        except FirewallError as exc:
            msg = str(exc)
            if "not supported" in msg or "No such file" in msg:
                raise FirewallError(msg + _NFT_HINT) from exc
            raise
        with store.locked() as st:
            if st["networks"].get(net.name) != net.record():
                st["networks"][net.name] = net.record()
        with self._lock:
            self._settings = settings
            self._store = store
        self._reserve_again(store)
        logger.debug("network ready", bridge=net.bridge, subnet=str(net.subnet))
        return {"driver": "native", "bridge": net.bridge, "subnet": str(net.subnet)}

    def _reserve_again(self, store: StateStore) -> None:
        """After a restart: hold the published ports of containers still attached again."""
        with store.locked(write=False) as st:
            recs = {k: a["ports"] for k, a in st["attachments"].items() if a["ports"]}
        for key, ports in recs.items():
            with self._lock:
                if key in self._reserved:
                    continue
            try:
                socks = reserve([_pel(p) for p in ports])
            except NyxError as exc:
                logger.warning("published port not reserved again", attachment=key, error=str(exc))
                continue
            with self._lock:
                self._reserved.setdefault(key, []).extend(socks)

    def _create_network(self, st: dict[str, Any], net: Network) -> None:
        """Bring up a non-default network's bridge and firewall elements (state locked)."""
        for name, rec in st["networks"].items():
            other = Network.from_record(name, rec)
            if other.subnet.overlaps(net.subnet):
                raise ConfigError(
                    f"network {net.name!r}: subnet {net.subnet} overlaps network {name!r} "
                    f"({other.subnet})"
                )
            if other.bridge == net.bridge:
                raise ConfigError(
                    f"network {net.name!r}: bridge name {net.bridge!r} is taken by {name!r}"
                )
        # nor any route or address of the host (nyx's own bridges are no host's)
        own = {net.bridge} | {r["bridge"] for r in st["networks"].values()}
        check_subnet_on_host(net.subnet, f"network {net.name!r}", ignore_devs=own)
        nl.ensure_bridge(net.bridge, net.gateway)
        try:
            _bridge_sysctls(net.bridge)
            self.firewall.run(
                network_elements("add", net.bridge, net.subnet), f"network {net.name!r}"
            )
        except BaseException:
            with nl.host_rtnl() as rt:
                nl.delete_link(rt, net.bridge)
            raise
        st["networks"][net.name] = net.record()

    def _drop_network(self, net: Network) -> None:
        self._delete_elements(network_elements("delete", net.bridge, net.subnet), net.name)
        with nl.host_rtnl() as rt:
            nl.delete_link(rt, net.bridge)

    def _remove_network_if_empty(self, st: dict[str, Any], name: str) -> None:
        rec = st["networks"].get(name)
        if rec is None or rec["default"]:
            return
        if any(a["network"] == name for a in st["attachments"].values()):
            return
        self._drop_network(Network.from_record(name, rec))
        del st["networks"][name]
        st["cursor"].pop(name, None)

    def _delete_elements(self, cmds: list[dict[str, Any]], what: str) -> None:
        """Delete elements in one batch; when some are already gone, one by one."""
        if not cmds:
            return
        try:
            self.firewall.run(cmds, what)
            return
        except FirewallError:
            pass
        for cmd in cmds:
            body = cmd["delete"]["element"]
            for elem in body["elem"]:
                one = {"delete": {"element": {**body, "elem": [elem]}}}
                try:
                    self.firewall.run([one], what)
                except FirewallError as exc:
                    if "No such file" not in str(exc) and "does not exist" not in str(exc):
                        raise

    # ------------------------------------------------------------------ setup

    def setup(
        self,
        container_id: str,
        netns_path: str,
        ports: Sequence[PortMapping],
        opts: SetupOptions,
    ) -> SetupResult:
        if not isinstance(container_id, str) or not _ID_RE.match(container_id):
            raise ConfigError(f"container_id {container_id!r} is not a valid container id")
        if not _IFNAME_RE.match(opts.interface):
            raise ConfigError(f"interface {opts.interface!r} is not a valid interface name")
        if opts.mac is not None and not _MAC_RE.match(opts.mac):
            raise ConfigError(f"mac {opts.mac!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
        for pm in ports:
            if pm.host_ip is not None and pm.host_ip.version == 6:
                raise ConfigError(
                    f"port mapping {pm}: host_ip {pm.host_ip} is IPv6; the native driver "
                    "publishes IPv4 only"
                )
        if opts.static_ip is not None and opts.static_ip.version != 4:
            raise ConfigError(f"static_ip {opts.static_ip} is not IPv4")
        count = published_count(ports)
        if count > self.settings.max_published_ports:
            raise ConfigError(
                f"ports: {count} host ports to publish, more than max_published_ports="
                f"{self.settings.max_published_ports} (NYXD_MAX_PUBLISHED_PORTS) allows"
            )
        ranges = port_ranges(ports)
        net = self._network_for(opts)
        if not os.path.exists(netns_path):
            raise NetlinkError(f"container netns {netns_path!r} does not exist")
        key = f"{container_id}/{net.name}"
        veth = veth_name(container_id, net.name)
        mac = (opts.mac or nl.random_mac()).lower()
        static = ipaddress.IPv4Address(str(opts.static_ip)) if opts.static_ip else None
        undo: list[tuple[str, Callable[[], None]]] = []
        socks: list[socket.socket] = []
        try:
            with self.store.locked() as st:
                if key in st["attachments"]:
                    raise BackendError(
                        f"container {container_id!r} is already set up on network {net.name!r}"
                    )
                if net.name not in st["networks"]:
                    if net.default:
                        raise BackendError(
                            "native driver: the default network is not set up "
                            "(nyx_backend_ensure_network)"
                        )
                    self._create_network(st, net)
                    # until the lease is on disk, a failure must remove the new network here
                    undo.append(("network", lambda: self._drop_network(net)))
                else:
                    net = Network.from_record(net.name, st["networks"][net.name])
                    if not net.default and opts.subnet is not None and opts.subnet != net.gateway:
                        raise ConfigError(
                            f"network {net.name!r} exists with subnet {net.gateway}, "
                            f"not {opts.subnet}"
                        )
                used = [a["ip"] for a in st["attachments"].values() if a["network"] == net.name]
                ip = allocate(net.subnet, net.gateway.ip, used, static, st["cursor"].get(net.name))
                pels = port_elements(ports, str(ip))
                if ranges:
                    check_conflicts(
                        ranges,
                        (
                            (a["container"], _pel(p))
                            for a in st["attachments"].values()
                            for p in a["ports"]
                        ),
                    )
                socks = reserve(pels)
                st["attachments"][key] = {
                    "container": container_id,
                    "network": net.name,
                    "ip": str(ip),
                    "veth": veth,
                    "interface": opts.interface,
                    "mac": mac,
                    "internal": opts.internal,
                    "ports": [_pel_list(p) for p in pels],
                    "netns": netns_path,
                }
                if static is None:
                    st["cursor"][net.name] = str(ip)
            # the lease is on disk: _forget removes the network with its last lease
            undo = [u for u in undo if u[0] != "network"]
            undo.append(("lease", lambda: self._forget(key)))
            with nl.host_rtnl() as rt:
                br = nl.get_link(rt, net.bridge)
                if br is None:
                    raise NetlinkError(
                        f"bridge {net.bridge!r} of network {net.name!r} is missing "
                        "(was nyx_backend_ensure_network called in this namespace?)"
                    )
                fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    try:
                        nl.create_veth(rt, veth, br.index, br.mtu, fd, opts.interface, mac)
                    except nl.LinkExists:  # a leftover of a crashed setup: replace it
                        if not nl.delete_link(rt, veth):
                            raise
                        nl.create_veth(rt, veth, br.index, br.mtu, fd, opts.interface, mac)
                finally:
                    os.close(fd)
            undo.append(("veth", lambda: self._del_veth(veth)))
            iface = ipaddress.IPv4Interface(f"{ip}/{net.subnet.prefixlen}")
            nl.configure_container(netns_path, opts.interface, iface, net.gateway.ip)
            self.firewall.run(
                container_batch("add", pels, str(ip) if opts.internal else None),
                f"setup of container {container_id!r}",
            )
        except BaseException as exc:
            for s in socks:
                s.close()
            failures = []
            for what, fn in reversed(undo):
                try:
                    fn()
                except Exception as uexc:  # reported with the original error
                    failures.append(f"{what}: {uexc}")
            if failures:
                logger.warning("setup rollback incomplete", errors=failures)
            if isinstance(exc, NyxError) or not isinstance(exc, Exception):
                raise
            raise BackendError(
                f"native driver: setup of container {container_id!r} failed: {exc!r}"
            ) from exc
        with self._lock:
            self._reserved.setdefault(key, []).extend(socks)
        logger.debug("container set up", container=container_id, ip=str(ip), veth=veth)
        return SetupResult(
            container_id=container_id,
            network=net.name,
            interfaces=[InterfaceResult(name=opts.interface, mac=mac, addresses=[iface])],
            gateway=net.gateway.ip,
            dns_server=net.gateway.ip,
            internal=opts.internal,
            extra={"host_interface": veth, "bridge": net.bridge},
        )

    def _forget(self, key: str) -> None:
        with self.store.locked() as st:
            rec = st["attachments"].pop(key, None)
            if rec is not None:
                self._remove_network_if_empty(st, rec["network"])

    def _del_veth(self, name: str) -> None:
        with nl.host_rtnl() as rt:
            nl.delete_link(rt, name)

    # ------------------------------------------------------------------ teardown

    def teardown(self, container_id: str, netns_path: str) -> None:
        errors: list[BaseException] = []
        with self.store.locked(write=False) as st:
            recs = {
                k: dict(a) for k, a in st["attachments"].items() if a["container"] == container_id
            }
        # 1. firewall entries
        for rec in recs.values():
            cmds = container_batch(
                "delete",
                [_pel(p) for p in rec["ports"]],
                rec["ip"] if rec["internal"] else None,
            )
            try:
                self._delete_elements(cmds, f"teardown of container {container_id!r}")
            except NyxError as exc:
                errors.append(exc)
        with self._lock:
            socks = [s for key in recs for s in self._reserved.pop(key, [])]
        for s in socks:
            s.close()
        # 2. veths (gone already when the netns was deleted)
        if recs:
            try:
                with nl.host_rtnl() as rt:
                    for rec in recs.values():
                        try:
                            nl.delete_link(rt, rec["veth"])
                        except NyxError as exc:
                            errors.append(exc)
            except OSError as exc:
                errors.append(NetlinkError(f"netlink socket: {exc}"))
        # 3. leases (and networks left empty)
        if recs:
            with self.store.locked() as st:
                for key in recs:
                    st["attachments"].pop(key, None)
                for name in {r["network"] for r in recs.values()}:
                    try:
                        self._remove_network_if_empty(st, name)
                    except NyxError as exc:
                        errors.append(exc)
        if errors:
            raise TeardownError(f"container {container_id!r}", errors)
        logger.debug("container torn down", container=container_id)
