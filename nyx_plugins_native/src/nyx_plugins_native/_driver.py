"""The native driver: bridge + veth + IPAM + nftables map elements, all in-process.

Networks have a lifecycle: ``ensure_network`` brings the default network up (from the
settings), ``network_create`` any other one (validated first, then its bridge and firewall
elements), ``network_remove`` takes it down once no container is attached. ``setup`` joins a
container to a network that exists; ``teardown`` leaves the network in place; ``gc`` releases
what crashed containers left behind. Leases and network records are nyx_core's
:class:`~nyx_core.LeaseStore` (:func:`~nyx_plugins_native._network.lease_store`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from loguru import logger

from nyx_core import (
    InterfaceResult,
    LeaseStore,
    NetworkInfo,
    NetworkSpec,
    NyxSettings,
    PortMapping,
    SetupOptions,
    SetupResult,
    allocate,
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
from ._firewall import (
    Firewall,
    PortElement,
    container_batch,
    network_elements,
    port_elements,
    stale_elements,
)
from ._kernel import check_kernel, set_sysctl
from ._network import IFNAME_RE, Network, bridge_name, lease_store, owner, parse_options
from ._ports import check_conflicts, reserve
from ._settings import NativeSettings

__all__ = ["NativeDriver", "bridge_name", "veth_name"]

_ID_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
_IFNAME_RE = IFNAME_RE
_VETH_RE = re.compile(r"^nv[0-9a-f]{12}$")
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


def _bridge_sysctls(bridge: str) -> None:
    # 127.0.0.1:PORT publishing needs local-net addresses routed out of the bridge. Its
    # price (a container sending to the host's 127.0.0.1, CVE-2020-8558) is paid by the
    # table's guard chain, which drops 127.0.0.0/8 arriving on any link but lo: ensure the
    # table before calling this.
    set_sysctl(f"net.ipv4.conf.{bridge}.route_localnet", "1")
    # IPv4 only: no link-local address or fe80::/64 route appearing with the first port
    if os.path.exists(f"/proc/sys/net/ipv6/conf/{bridge}/disable_ipv6"):
        set_sysctl(f"net.ipv6.conf.{bridge}.disable_ipv6", "1")


def _pel(p: list[Any]) -> PortElement:
    return PortElement(p[0], p[1], p[2], p[3], p[4])


def _pel_list(p: PortElement) -> list[Any]:
    return [p.host_ip, p.protocol, p.host_port, p.container_ip, p.container_port]


def _networks(meta: Mapping[str, Any]) -> dict[str, Network]:
    return {name: Network.from_record(name, rec) for name, rec in meta.items()}


class NativeDriver:
    """One instance per process; ``ensure_network`` binds it to the daemon's settings."""

    def __init__(self, firewall: Firewall | None = None) -> None:
        self.firewall = firewall or Firewall()
        self._settings: NyxSettings | None = None
        self._store: LeaseStore | None = None
        # attachment key -> sockets holding its published host ports
        self._reserved: dict[str, list[socket.socket]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ helpers

    @property
    def store(self) -> LeaseStore:
        if self._store is None:
            raise BackendError("native driver: nyx_backend_ensure_network was not called")
        return self._store

    @property
    def settings(self) -> NyxSettings:
        if self._settings is None:
            raise BackendError("native driver: nyx_backend_ensure_network was not called")
        return self._settings

    def _bring_up(self, net: Network) -> None:
        """Bridge (gateway, MTU, up), its sysctls and firewall elements; idempotent."""
        try:
            nl.ensure_bridge(net.bridge, net.gateway, net.mtu)
            _bridge_sysctls(net.bridge)
            self.firewall.run(
                network_elements("add", net.bridge, net.subnet), f"network {net.name!r}"
            )
        except FirewallError as exc:
            msg = str(exc)
            if "not supported" in msg or "No such file" in msg:
                raise FirewallError(msg + _NFT_HINT) from exc
            raise

    def _take_down(self, net: Network) -> list[BaseException]:
        """Delete the network's firewall elements and bridge; the failures, if any."""
        errors: list[BaseException] = []
        try:
            self._delete_elements(
                network_elements("delete", net.bridge, net.subnet), f"network {net.name!r}"
            )
        except NyxError as exc:
            errors.append(exc)
        try:
            with nl.host_rtnl() as rt:
                nl.delete_link(rt, net.bridge)
        except NyxError as exc:
            errors.append(exc)
        return errors

    # ------------------------------------------------------------------ ensure

    def ensure_network(
        self, settings: NyxSettings, options: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        options = dict(options or {})
        check_kernel()
        _none, mtu = parse_options("nyxd --driver-opt", options, bridge=False)
        bridge = settings.plugin(NativeSettings).bridge
        net = Network(
            settings.network, bridge, settings.gateway_interface, True, mtu=mtu, options=options
        )
        store = lease_store(settings.state_dir)
        # before anything changes: the default subnet must not take the host's traffic,
        # nor another nyx network's
        with store.locked(write=False) as st:
            others = _networks(st.meta)
        for name, other in others.items():
            if name != net.name and other.subnet.overlaps(net.subnet):
                raise ConfigError(
                    f"default network {net.name!r} (NYXD_CONTAINER_SUBNET): subnet "
                    f"{net.subnet} overlaps network {name!r} ({other.subnet})"
                )
        own = {net.bridge} | {o.bridge for o in others.values()}
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
        except FirewallError as exc:
            msg = str(exc)
            if "not supported" in msg or "No such file" in msg:
                raise FirewallError(msg + _NFT_HINT) from exc
            raise
        self._bring_up(net)
        with store.locked() as st:
            if st.meta.get(net.name) != net.record():
                st.meta[net.name] = net.record()
        with self._lock:
            self._settings = settings
            self._store = store
        self._reserve_again(store)
        logger.debug("network ready", bridge=net.bridge, subnet=str(net.subnet))
        return {"driver": "native", "bridge": net.bridge, "subnet": str(net.subnet)}

    def _reserve_again(self, store: LeaseStore) -> None:
        """After a restart: hold the published ports of containers still attached again."""
        with store.locked(write=False) as st:
            recs = {k: a["ports"] for k, a in st.records.items() if a.get("ports")}
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

    # ------------------------------------------------------------------ networks

    def _default_spec(self, spec: NetworkSpec) -> Network:
        s = self.settings
        what = f"default network {spec.name!r}"
        if spec.name != s.network:
            raise ConfigError(f"{what}: the default network of this nyxd is {s.network!r}")
        gw = spec.gateway_interface
        if gw is not None and gw != s.gateway_interface:
            raise ConfigError(
                f"{what}: subnet {spec.subnet} gateway {gw.ip} differ from the settings' "
                f"{s.gateway_interface} (NYXD_CONTAINER_SUBNET, NYXD_GATEWAY_IP)"
            )
        if spec.internal:
            raise ConfigError(f"{what}: the default network cannot be internal")
        if spec.options:
            raise ConfigError(
                f"{what}: options {', '.join(sorted(spec.options))}: the default network's "
                "driver options are nyxd's (--driver-opt key=value)"
            )
        with self.store.locked(write=False) as st:
            rec = st.meta.get(s.network)
        if rec is None:
            raise BackendError(f"native driver: {what} was not ensured (ensure_network)")
        return Network.from_record(s.network, rec)

    def _spec_network(self, spec: NetworkSpec) -> Network:
        """Validate a non-default spec into the network it asks for (nothing changes)."""
        what = f"network {spec.name!r}"
        if spec.name in (self.settings.network, "nyx"):
            raise ConfigError(f"{what}: that is the default network's name")
        if spec.subnet6 is not None or spec.gateway6 is not None:
            raise ConfigError(
                f"{what}: subnet6 {spec.subnet6} / gateway6 {spec.gateway6}: the native driver "
                "is IPv4-only (it does not declare the ipv6 capability)"
            )
        if spec.subnet is None:
            raise ConfigError(f"{what}: subnet is required (nyxd picks one from its pool)")
        if spec.subnet.prefixlen > 30:
            raise ConfigError(f"{what}: subnet {spec.subnet} is too small (need /30 or larger)")
        gw = spec.gateway_interface
        assert gw is not None
        if gw.ip in (spec.subnet.network_address, spec.subnet.broadcast_address):
            raise ConfigError(
                f"{what}: gateway {gw.ip} is the network or broadcast address of {spec.subnet}"
            )
        bridge, mtu = parse_options(what, spec.options)
        return Network(
            spec.name,
            bridge or bridge_name(spec.name),
            gw,
            False,
            spec.internal,
            mtu,
            dict(spec.options),
            dict(spec.labels),
        )

    def network_create(self, spec: NetworkSpec) -> NetworkInfo:
        """Create (or complete, for an identical spec) the network ``spec`` asks for."""
        if spec.default:
            net = self._default_spec(spec)
            self._bring_up(net)
            return net.info().model_copy(update={"labels": dict(spec.labels)})
        net = self._spec_network(spec)
        what = f"network {net.name!r}"
        with self.store.locked() as st:
            networks = _networks(st.meta)
            old = networks.pop(net.name, None)
            if old is not None:
                legacy = "options" not in st.meta[net.name]  # recorded by an older driver
                diff = old.differences(net)
                if legacy:
                    diff = [d for d in diff if d.split(" ", 1)[0] in ("gateway", "bridge")]
                if diff:
                    raise ConfigError(
                        f"{what} exists with another spec: {'; '.join(diff)}; "
                        "remove it first (nyx network rm)"
                    )
            for name, other in networks.items():
                if other.subnet.overlaps(net.subnet):
                    raise ConfigError(
                        f"{what}: subnet {net.subnet} overlaps network {name!r} ({other.subnet})"
                    )
                if other.bridge == net.bridge:
                    raise ConfigError(f"{what}: bridge name {net.bridge!r} is taken by {name!r}")
            # nor any route or address of the host (nyx's own bridges are no host's)
            own = {o.bridge for o in networks.values()} | ({old.bridge} if old else set())
            check_subnet_on_host(net.subnet, what, ignore_devs=own)
            if old is None:
                with nl.host_rtnl() as rt:
                    taken = nl.get_link(rt, net.bridge)
                if taken is not None:
                    raise ConfigError(
                        f"{what}: bridge name {net.bridge!r}: an interface of that name exists "
                        "on the host and is no nyx network's; pick another one "
                        "(-o com.docker.network.bridge.name=NAME) or remove it"
                    )
            # recorded before the bridge exists: a nyxd killed in between leaves a record
            # that network_remove (or the same network_create) completes, never a bridge
            # nothing records
            st.meta[net.name] = net.record()
        try:
            with self.store.locked(write=False):  # made under the lock setups take too
                self._bring_up(net)
        except BaseException:
            if old is None:
                failures = self._take_down(net)
                if failures:
                    logger.warning("network rollback incomplete", errors=failures)
                with self.store.locked() as st:
                    st.meta.pop(net.name, None)
            raise
        logger.debug("network created", network=net.name, bridge=net.bridge)
        return net.info()

    def network_remove(self, name: str) -> None:
        """Remove a network without attachments: elements, bridge, record. Idempotent."""
        if name == self.settings.network:
            raise ConfigError(f"network {name!r} is the default network: it cannot be removed")
        with self.store.locked() as st:
            rec = st.meta.get(name)
            if rec is None:
                return
            users = sorted({owner(a) for a in st.records.values() if a.get("network") == name})
            if users:
                raise ConfigError(
                    f"network {name!r} has containers attached ({', '.join(users)}): "
                    "tear them down first"
                )
            net = Network.from_record(name, rec)
            errors = self._take_down(net)
            if errors:
                raise TeardownError(f"network {name!r}", errors)
            del st.meta[name]
            st.cursor.pop(name, None)
        logger.debug("network removed", network=name, bridge=net.bridge)

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
        if not os.path.exists(netns_path):
            raise NetlinkError(f"container netns {netns_path!r} does not exist")
        key = LeaseStore.key(container_id, opts.network)
        veth = veth_name(container_id, opts.network)
        mac = (opts.mac or nl.random_mac()).lower()
        static = ipaddress.IPv4Address(str(opts.static_ip)) if opts.static_ip else None
        undo: list[tuple[str, Callable[[], None]]] = []
        socks: list[socket.socket] = []
        try:
            with self.store.locked() as st:
                rec = st.meta.get(opts.network)
                if rec is None:
                    raise ConfigError(
                        f"network {opts.network!r} does not exist: create it first "
                        "(nyx network create, nyx_backend_network_create)"
                    )
                net = Network.from_record(opts.network, rec)
                if opts.subnet is not None and opts.subnet != net.gateway:
                    raise ConfigError(
                        f"network {net.name!r} has gateway/prefix {net.gateway}, not {opts.subnet}"
                    )
                if key in st.records:
                    raise BackendError(
                        f"container {container_id!r} is already set up on network {net.name!r}"
                    )
                internal = opts.internal or net.internal
                ip = allocate(
                    net.subnet, net.gateway.ip, st.used(net.name), static, st.cursor.get(net.name)
                )
                assert isinstance(ip, ipaddress.IPv4Address)
                pels = port_elements(ports, str(ip))
                if ranges:
                    check_conflicts(
                        ranges,
                        (
                            (owner(a), _pel(p))
                            for a in st.records.values()
                            for p in a.get("ports", [])
                        ),
                    )
                socks = reserve(pels)
                st.records[key] = {
                    "owner": container_id,
                    "network": net.name,
                    "ip": str(ip),
                    "veth": veth,
                    "interface": opts.interface,
                    "mac": mac,
                    "internal": internal,
                    "ports": [_pel_list(p) for p in pels],
                    "netns": netns_path,
                }
                if static is None:
                    st.cursor[net.name] = str(ip)
            undo.append(("lease", lambda: self._forget(key)))
            with nl.host_rtnl() as rt:
                br = nl.get_link(rt, net.bridge)
                if br is None:
                    raise NetlinkError(
                        f"bridge {net.bridge!r} of network {net.name!r} is missing "
                        "(was the network created in this namespace?)"
                    )
                mtu = net.mtu or br.mtu
                fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    try:
                        nl.create_veth(rt, veth, br.index, mtu, fd, opts.interface, mac)
                    except nl.LinkExists:  # a leftover of a crashed setup: replace it
                        if not nl.delete_link(rt, veth):
                            raise
                        nl.create_veth(rt, veth, br.index, mtu, fd, opts.interface, mac)
                finally:
                    os.close(fd)
            undo.append(("veth", lambda: self._del_veth(veth)))
            iface = ipaddress.IPv4Interface(f"{ip}/{net.subnet.prefixlen}")
            nl.configure_container(netns_path, opts.interface, iface, net.gateway.ip)
            self.firewall.run(
                container_batch("add", pels, str(ip) if internal else None),
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
            internal=internal,
            extra={"host_interface": veth, "bridge": net.bridge},
        )

    def _forget(self, key: str) -> None:
        with self.store.locked() as st:
            st.records.pop(key, None)

    def _del_veth(self, name: str) -> None:
        with nl.host_rtnl() as rt:
            nl.delete_link(rt, name)

    # ------------------------------------------------------------------ teardown, gc

    def _release(self, what: str, recs: dict[str, dict[str, Any]]) -> list[BaseException]:
        """Firewall elements, port sockets, veths, then leases of ``recs``; the failures."""
        errors: list[BaseException] = []
        # 1. firewall entries
        for rec in recs.values():
            cmds = container_batch(
                "delete",
                [_pel(p) for p in rec.get("ports", [])],
                rec["ip"] if rec.get("internal") else None,
            )
            try:
                self._delete_elements(cmds, what)
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
            except NyxError as exc:
                errors.append(exc)
        # 3. leases (the networks stay until network_remove)
        if recs:
            with self.store.locked() as st:
                for key in recs:
                    st.records.pop(key, None)
        return errors

    def teardown(self, container_id: str, netns_path: str) -> None:
        with self.store.locked(write=False) as st:
            recs = {k: dict(a) for k, a in st.records.items() if owner(a) == container_id}
        errors = self._release(f"teardown of container {container_id!r}", recs)
        if errors:
            raise TeardownError(f"container {container_id!r}", errors)
        logger.debug("container torn down", container=container_id)

    def gc(self, container_ids: Sequence[str]) -> dict[str, Any]:
        """Release what containers not in ``container_ids`` still hold; never touch those.

        Their leases (with their veths, port elements and reserved ports), then what no
        lease explains any more: ``nv...`` veths on the driver's bridges and map or set
        elements pointing into its subnets.
        """
        keep = set(container_ids)
        errors: list[BaseException] = []
        with self.store.locked(write=False) as st:
            leaked: dict[str, dict[str, dict[str, Any]]] = {}
            for key, rec in st.records.items():
                if owner(rec) not in keep:
                    leaked.setdefault(owner(rec), {})[key] = dict(rec)
        for cid, recs in sorted(leaked.items()):
            errors += self._release(f"gc of container {cid!r}", recs)
        with self.store.locked(write=False) as st:
            nets = _networks(st.meta)
            veths = {r.get("veth") for r in st.records.values()}
            leased = {r.get("ip") for r in st.records.values()}
        # veths left by a teardown that could not delete them
        stray: list[str] = []
        try:
            ports = nl.bridge_ports({n.bridge for n in nets.values()})
            stray = sorted(p for p in ports if _VETH_RE.match(p) and p not in veths)
            if stray:
                with nl.host_rtnl() as rt:
                    for name in stray:
                        try:
                            nl.delete_link(rt, name)
                        except NyxError as exc:
                            errors.append(exc)
        except NyxError as exc:
            errors.append(exc)
        # map and set elements of addresses no lease holds
        cmds: list[dict[str, Any]] = []
        try:
            listed = {m: self.firewall.elements(m) for m in ("ports_any", "ports_ip", "internal")}
            cmds = stale_elements(
                listed, {str(ip) for ip in leased}, [n.subnet for n in nets.values()]
            )
            self._delete_elements(cmds, "gc of firewall elements")
        except NyxError as exc:
            errors.append(exc)
        if errors:
            raise TeardownError("native driver gc", errors)
        report = {
            "containers": sorted(leaked),
            "veths": stray,
            "elements": sum(len(c["delete"]["element"]["elem"]) for c in cmds),
        }
        if leaked or stray or cmds:
            logger.info("released leftovers", **report)
        return report
