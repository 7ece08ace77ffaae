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
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from loguru import logger

from nyx_core import (
    InterfaceResult,
    LeaseState,
    LeaseStore,
    NetworkInfo,
    NetworkSpec,
    NyxSettings,
    PortMapping,
    PortRange,
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
from ._firewall import (
    FAMILIES,
    FAMILY6,
    Firewall,
    container_batch,
    network_elements,
    pel_from_list,
    pel_to_list,
    port_elements,
    stale_elements,
)
from ._gate import Gate
from ._kernel import check_kernel, enable_ipv6_forwarding, ipv6_available, set_sysctl
from ._lifecycle import Lifecycle
from ._network import (
    IFNAME_RE,
    MTU_MIN6,
    Network,
    bridge_name,
    cursor6,
    lease_store,
    networks_of,
    overlap6,
    owner,
    parse_options,
    port_token,
)
from ._ports import check_conflicts, overlapping, reserve
from ._proxy import Proxies
from ._repair import Repair
from ._settings import NativeSettings
from ._watch import HostWatch

__all__ = ["NativeDriver", "bridge_name", "veth_name"]

_ID_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
_IFNAME_RE = IFNAME_RE
_VETH_RE = re.compile(r"^nv[0-9a-f]{12}$")
_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_NFT_HINT = (
    " (the kernel needs nf_tables with nat, masquerade, fib and conntrack: "
    "`modprobe nf_tables nft_chain_nat nft_masq nft_fib_ipv4 nft_fib_ipv6 nft_ct`; "
    "see docs/kernel-requirements.md)"
)


def _h(text: str, n: int) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def veth_name(container_id: str, network: str) -> str:
    """Host-side veth name: ``nv`` + 12 hex digits of the (container, network) hash."""
    return "nv" + _h(f"{container_id}/{network}", 12)


def _bridge_sysctls(bridge: str, ipv6: bool) -> None:
    # 127.0.0.1:PORT publishing needs local-net addresses routed out of the bridge. Its
    # price (a container sending to the host's 127.0.0.1, CVE-2020-8558) is paid by the
    # table's guard chain, which drops 127.0.0.0/8 arriving on any link but lo: ensure the
    # table before calling this.
    set_sysctl("net.ipv4.conf.{}.route_localnet", "1", bridge)
    # IPv4 only: no link-local address or fe80::/64 route appearing with the first port
    # (a dual-stack bridge has IPv6 on, set by ensure_bridge)
    if not ipv6 and os.path.exists(f"/proc/sys/net/ipv6/conf/{bridge}/disable_ipv6"):
        set_sysctl("net.ipv6.conf.{}.disable_ipv6", "1", bridge)


def _publishing(st: LeaseState, ranges: Sequence[PortRange]) -> Iterable[Mapping[str, Any]]:
    """The leases that may publish a port of ``ranges``: looked up port by port in the
    lease index when the ranges hold fewer ports than there are leases, else all of them."""
    if sum(r.last - r.first + 1 for r in ranges) > len(st.records):
        return st.records.values()
    keys: set[str] = set()
    for r in ranges:
        for port in range(r.first, r.last + 1):
            keys |= st.find(port_token(r.protocol, port))
    return [st.records[k] for k in sorted(keys)]


class NativeDriver(Repair, Lifecycle):
    """One instance per process; ``ensure_network`` binds it to the daemon's settings."""

    def __init__(self, firewall: Firewall | None = None) -> None:
        self.firewall = firewall or Firewall()
        self._settings: NyxSettings | None = None
        self._store: LeaseStore | None = None
        # attachment key -> sockets holding its published host ports
        self._reserved: dict[str, list[socket.socket]] = {}
        self._proxies = Proxies()
        self._lock = threading.Lock()
        self._gate = Gate()
        self._families: tuple[str, ...] = FAMILIES[:1]
        self._bridges: set[str] = set()  # of every network brought up: what the watch sees
        self._watch: HostWatch | None = None
        self._watch_ns = 0

    # ------------------------------------------------------------------ the gated calls

    def network_create(self, spec: NetworkSpec) -> NetworkInfo:
        """Create (or complete, for an identical spec) the network ``spec`` asks for."""
        with self._gate.shared():
            return self._network_create(spec)

    def network_remove(self, name: str) -> None:
        """Remove a network without attachments: elements, bridge, record. Idempotent."""
        with self._gate.shared():
            self._network_remove(name)

    def setup(
        self,
        container_id: str,
        netns_path: str,
        ports: Sequence[PortMapping],
        opts: SetupOptions,
    ) -> SetupResult:
        with self._gate.shared():
            return self._setup(container_id, netns_path, ports, opts)

    def teardown(self, container_id: str, netns_path: str) -> None:
        with self._gate.shared():
            self._teardown(container_id, netns_path)

    def gc(self, container_ids: Sequence[str]) -> dict[str, Any]:
        """Release what containers not in ``container_ids`` still hold (see ``_gc``)."""
        with self._gate.shared():
            return self._gc(container_ids)

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
        """Bridge (gateways, MTU, up), its sysctls and firewall elements (and IPv6
        forwarding for a dual-stack network); idempotent."""
        try:
            nl.ensure_bridge(net.bridge, net.gateway, net.mtu, net.gateway6)
            _bridge_sysctls(net.bridge, net.gateway6 is not None)
            self.firewall.run(
                network_elements("add", net.bridge, net.subnet, net.subnet6),
                f"network {net.name!r}",
            )
            with self._lock:
                self._bridges.add(net.bridge)
            if net.gateway6 is not None:
                raised = enable_ipv6_forwarding()
                if raised:
                    logger.info(
                        "IPv6 forwarding on; router advertisements still accepted",
                        accept_ra_2=raised,
                    )
        except FirewallError as exc:
            msg = str(exc)
            if "not supported" in msg or "No such file" in msg:
                raise FirewallError(msg + _NFT_HINT) from exc
            raise

    def _take_down(self, net: Network) -> list[BaseException]:
        """Delete the network's firewall elements and bridge; the failures, if any."""
        errors: list[BaseException] = []
        with self._lock:
            self._bridges.discard(net.bridge)  # its deletion is nyx's own
        try:
            self._delete_elements(
                network_elements("delete", net.bridge, net.subnet, net.subnet6),
                f"network {net.name!r}",
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
            settings.network,
            bridge,
            settings.gateway_interface,
            True,
            mtu=mtu,
            options=options,
            gateway6=settings.gateway_interface6,
        )
        v6 = ipv6_available()
        if net.gateway6 is not None and not v6:
            raise ConfigError(
                f"default network {net.name!r} (NYXD_CONTAINER_SUBNET6): subnet6 "
                f"{net.subnet6}: this kernel has no IPv6 (see docs/kernel-requirements.md)"
            )
        if net.gateway6 is not None and mtu is not None and mtu < MTU_MIN6:
            raise ConfigError(
                f"nyxd --driver-opt: mtu {mtu} is below IPv6's minimum {MTU_MIN6} "
                "(NYXD_CONTAINER_SUBNET6 is set)"
            )
        store = lease_store(settings.state_dir)
        # before anything changes: the default subnet must not take the host's traffic,
        # nor another nyx network's
        with store.locked(write=False) as st:
            others = networks_of(st.meta)
        for name, other in others.items():
            if name != net.name and other.subnet.overlaps(net.subnet):
                raise ConfigError(
                    f"default network {net.name!r} (NYXD_CONTAINER_SUBNET): subnet "
                    f"{net.subnet} overlaps network {name!r} ({other.subnet})"
                )
            if name != net.name and overlap6(net, other):
                raise ConfigError(
                    f"default network {net.name!r} (NYXD_CONTAINER_SUBNET6): subnet6 "
                    f"{net.subnet6} overlaps network {name!r} ({other.subnet6})"
                )
        own = {net.bridge} | {o.bridge for o in others.values()}
        check_subnet_on_host(
            net.subnet,
            f"default network {net.name!r} (NYXD_CONTAINER_SUBNET)",
            ignore_devs=own,
        )
        if net.subnet6 is not None:
            check_subnet_on_host(
                net.subnet6,
                f"default network {net.name!r} (NYXD_CONTAINER_SUBNET6)",
                ignore_devs=own,
            )
        nl.check_veth_support()
        try:
            # the table first: its guard must drop 127.0.0.0/8 from outside before any
            # bridge gets route_localnet, and nothing is forwarded before the masquerade
            # and isolation rules exist
            self.firewall.ensure(ipv6=v6)
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
            self._families = FAMILIES if v6 else FAMILIES[:1]
            self._bridges |= {o.bridge for o in others.values()}
        self._reserve_again(store)
        if settings.plugin(NativeSettings).watch:
            self._start_watch()
        logger.debug(
            "network ready", bridge=net.bridge, subnet=str(net.subnet), subnet6=str(net.subnet6)
        )
        out = {"driver": "native", "bridge": net.bridge, "subnet": str(net.subnet)}
        if net.subnet6 is not None:
            out["subnet6"] = str(net.subnet6)
        return out

    def _reserve_again(self, store: LeaseStore) -> None:
        """After a restart: hold the published ports of containers still attached again."""
        with store.locked(write=False) as st:
            recs = {k: a["ports"] for k, a in st.records.items() if a.get("ports")}
        for key, ports in recs.items():
            with self._lock:
                if key in self._reserved:
                    continue
            pels = [pel_from_list(p) for p in ports]
            try:
                socks = reserve(pels)
            except NyxError as exc:
                logger.warning("published port not reserved again", attachment=key, error=str(exc))
                continue
            self._proxies.add(key, list(zip(socks, pels, strict=True)))
            with self._lock:
                self._reserved.setdefault(key, []).extend(socks)

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

    def _setup(
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
        static, static6 = opts.static_v4, opts.static_v6
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
                ip = st.pick(net.name, net.subnet, net.gateway.ip, static)
                assert isinstance(ip, ipaddress.IPv4Address)
                ip6: ipaddress.IPv6Address | None = None
                if net.gateway6 is not None:
                    got = st.pick(
                        net.name,
                        net.gateway6.network,
                        net.gateway6.ip,
                        static6,
                        cursor=cursor6(net.name),
                        field=opts.static_v6_field,
                    )
                    assert isinstance(got, ipaddress.IPv6Address)
                    ip6 = got
                elif static6 is not None:
                    raise ConfigError(
                        f"{opts.static_v6_field} {static6} is IPv6 but network {net.name!r} "
                        "has no IPv6 subnet (create it with --ipv6 / --subnet6)"
                    )
                pels = port_elements(ports, str(ip), None if ip6 is None else str(ip6))
                if ranges:
                    near = overlapping(ranges)
                    lo, hi = near.lo, near.hi
                    check_conflicts(
                        ranges,
                        (
                            (owner(a), pel_from_list(p))
                            for a in _publishing(st, ranges)
                            for p in a.get("ports", ())
                            if lo <= p[2] <= hi and near(p[1], p[2])
                        ),
                    )
                socks = reserve(pels)
                lease: dict[str, Any] = {
                    "owner": container_id,
                    "network": net.name,
                    "ip": str(ip),
                    "veth": veth,
                    "interface": opts.interface,
                    "mac": mac,
                    "internal": internal,
                    "ports": [pel_to_list(p) for p in pels],
                    "netns": netns_path,
                }
                if ip6 is not None:
                    lease["ip6"] = str(ip6)
                st.records[key] = lease
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
            iface6 = None
            if ip6 is not None and net.gateway6 is not None:
                iface6 = ipaddress.IPv6Interface(f"{ip6}/{net.gateway6.network.prefixlen}")
            nl.configure_container(
                netns_path,
                opts.interface,
                iface,
                net.gateway.ip,
                iface6,
                None if net.gateway6 is None else net.gateway6.ip,
            )
            self.firewall.run(
                container_batch(
                    "add",
                    pels,
                    str(ip) if internal else None,
                    str(ip6) if internal and ip6 is not None else None,
                ),
                f"setup of container {container_id!r}",
            )
            undo.append(("proxy", lambda: self._proxies.remove(key)))
            self._proxies.add(key, list(zip(socks, pels, strict=True)))
        except BaseException as exc:
            failures = []
            for what, fn in reversed(undo):
                try:
                    fn()
                except Exception as uexc:  # reported with the original error
                    failures.append(f"{what}: {uexc}")
            for s in socks:
                s.close()
            if failures:
                logger.warning("setup rollback incomplete", errors=failures)
            if isinstance(exc, NyxError) or not isinstance(exc, Exception):
                raise
            raise BackendError(
                f"native driver: setup of container {container_id!r} failed: {exc!r}"
            ) from exc
        with self._lock:
            self._reserved.setdefault(key, []).extend(socks)
        logger.debug(
            "container set up", container=container_id, ip=str(ip), ip6=str(ip6), veth=veth
        )
        addresses: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = [iface]
        extra: dict[str, Any] = {"host_interface": veth, "bridge": net.bridge}
        if iface6 is not None and net.gateway6 is not None:
            addresses.append(iface6)
            extra["gateway6"] = str(net.gateway6.ip)
        return SetupResult(
            container_id=container_id,
            network=net.name,
            interfaces=[InterfaceResult(name=opts.interface, mac=mac, addresses=addresses)],
            gateway=net.gateway.ip,
            dns_server=net.gateway.ip,
            internal=internal,
            extra=extra,
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
                [pel_from_list(p) for p in rec.get("ports", [])],
                rec["ip"] if rec.get("internal") else None,
                rec.get("ip6") if rec.get("internal") else None,
            )
            try:
                self._delete_elements(cmds, what)
            except NyxError as exc:
                errors.append(exc)
        for key in recs:
            try:
                self._proxies.remove(key)
            except Exception as exc:  # never stops a teardown
                errors.append(BackendError(f"{what}: loopback proxy: {exc!r}"))
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

    def _teardown(self, container_id: str, netns_path: str) -> None:
        with self.store.locked(write=False) as st:
            recs = {k: dict(a) for k, a in st.owned(container_id).items()}
        errors = self._release(f"teardown of container {container_id!r}", recs)
        if errors:
            raise TeardownError(f"container {container_id!r}", errors)
        logger.debug("container torn down", container=container_id)

    def _gc(self, container_ids: Sequence[str]) -> dict[str, Any]:
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
            nets = networks_of(st.meta)
            veths = {r.get("veth") for r in st.records.values()}
            leased = {r.get(f) for r in st.records.values() for f in ("ip", "ip6")} - {None}
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
            subnets: dict[str, list[ipaddress.IPv4Network | ipaddress.IPv6Network]] = {
                FAMILIES[0]: [n.subnet for n in nets.values()],
                FAMILY6: [n.subnet6 for n in nets.values() if n.subnet6 is not None],
            }
            for family in FAMILIES if ipv6_available() else FAMILIES[:1]:
                listed = {
                    m: self.firewall.elements(m, family)
                    for m in ("ports_any", "ports_ip", "internal")
                }
                cmds += stale_elements(listed, {str(ip) for ip in leased}, subnets[family], family)
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
