"""Request configurations for plugins and the conversion of CNI results to SetupResult."""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from nyx_core import BackendError, InterfaceResult, PortMapping, SetupResult

__all__ = [
    "WELL_KNOWN_CAPABILITIES",
    "port_mappings",
    "request_config",
    "to_setup_result",
]

WELL_KNOWN_CAPABILITIES = (
    "portMappings",
    "ipRanges",
    "dns",
    "ips",
    "mac",
    "bandwidth",
    "aliases",
    "infinibandGUID",
    "deviceID",
    "cgroupPath",
)


def port_mappings(ports: Sequence[PortMapping]) -> list[dict[str, Any]]:
    """The ``portMappings`` capability argument (ranges expanded to one entry per port)."""
    out: list[dict[str, Any]] = []
    for pm in ports:
        for i in range(pm.range):
            entry: dict[str, Any] = {
                "hostPort": pm.host_port + i,
                "containerPort": pm.container_port + i,
                "protocol": pm.protocol,
            }
            if pm.host_ip is not None:
                entry["hostIP"] = str(pm.host_ip)
            out.append(entry)
    return out


def request_config(
    plugin: Mapping[str, Any],
    *,
    name: str,
    cni_version: str,
    prev_result: Mapping[str, Any] | None = None,
    capability_args: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Derive one plugin's request configuration (spec section 3).

    Inserts ``cniVersion`` and ``name``, ``prevResult`` when given, and ``runtimeConfig``
    = the capability arguments the plugin declared in ``capabilities``; removes
    ``capabilities``; passes every other field through unchanged.
    """
    conf = copy.deepcopy(dict(plugin))
    caps = conf.pop("capabilities", None) or {}
    conf["cniVersion"] = cni_version
    conf["name"] = name
    if prev_result is not None:
        conf["prevResult"] = prev_result
    if capability_args:
        rc = {k: v for k, v in capability_args.items() if caps.get(k) is True}
        if rc:
            conf["runtimeConfig"] = rc
    if extra:
        conf.update(extra)
    return conf


def _iface(text: Any, where: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    try:
        return ipaddress.ip_interface(str(text))
    except ValueError as exc:
        raise BackendError(f"CNI result: {where} {text!r} is not an address/prefix") from exc


def to_setup_result(
    result: Mapping[str, Any],
    *,
    container_id: str,
    network: str,
    netns: str,
    ifname: str,
) -> SetupResult:
    """Convert a CNI ADD result (0.3.0 - 1.1.0) to :class:`~nyx_core.SetupResult`.

    Interfaces are those in the container sandbox; each gets the ``ips`` whose
    ``interface`` index points at it (an ip without index goes to ``ifname``). The gateway
    is the first IPv4 ip's gateway (else the first one's); DNS comes from ``dns``.
    """
    ifaces = result.get("interfaces") or []
    if not isinstance(ifaces, list):
        raise BackendError("CNI result: interfaces is not a list")
    in_sandbox: dict[int, InterfaceResult] = {}
    for i, itf in enumerate(ifaces):
        if isinstance(itf, dict) and itf.get("sandbox"):
            in_sandbox[i] = InterfaceResult(name=str(itf.get("name", "")), mac=itf.get("mac"))
    gateways: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for n, ip in enumerate(result.get("ips") or []):
        if not isinstance(ip, dict):
            raise BackendError(f"CNI result: ips[{n}] is not an object")
        addr = _iface(ip.get("address"), f"ips[{n}].address")
        idx = ip.get("interface")
        target = in_sandbox.get(idx) if isinstance(idx, int) else None
        if target is None:
            if isinstance(idx, int) and 0 <= idx < len(ifaces):
                continue  # an address on a host-side interface
            target = next((t for t in in_sandbox.values() if t.name == ifname), None)
            if target is None:
                target = InterfaceResult(name=ifname)
                in_sandbox[len(ifaces) + len(in_sandbox)] = target
        target.addresses.append(addr)
        if ip.get("gateway"):
            try:
                gateways.append(ipaddress.ip_address(str(ip["gateway"])))
            except ValueError as exc:
                raise BackendError(
                    f"CNI result: ips[{n}].gateway {ip['gateway']!r} is not an address"
                ) from exc
    gateway = next((g for g in gateways if g.version == 4), gateways[0] if gateways else None)
    dns = result.get("dns") or {}
    servers = dns.get("nameservers") or [] if isinstance(dns, dict) else []
    dns_server = None
    for s in servers:
        try:
            dns_server = ipaddress.ip_address(str(s))
            break
        except ValueError:
            continue
    search = [str(s) for s in (dns.get("search") or [])] if isinstance(dns, dict) else []
    if isinstance(dns, dict) and dns.get("domain") and not search:
        search = [str(dns["domain"])]
    return SetupResult(
        container_id=container_id,
        network=network,
        interfaces=list(in_sandbox.values()),
        gateway=gateway,
        dns_server=dns_server,
        dns_search=search,
        extra={"cni": {"netns": netns, "cniVersion": result.get("cniVersion"), "result": result}},
    )
