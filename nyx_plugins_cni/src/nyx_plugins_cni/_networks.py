"""nyx networks on CNI: one conflist each, the driver options, the conflists nyx wrote.

A network nyx creates gets a conflist generated from :func:`~._conf.network_conflist`,
written atomically into the conf dir; a record under ``<state dir>/cni/conflists/<name>.json``
(the file's path and SHA-256, the bridge, the spec) says nyx wrote it, so that
``network_remove`` deletes that file (and its bridge) and never a conflist the admin wrote
or edited. A conflist the admin wrote is used as is.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from nyx_core import BackendError, ConfigError, NetworkInfo, NetworkSpec

from ._conf import NetworkConfig, Subnet

__all__ = [
    "BRIDGE_OPTIONS",
    "KNOWN_OPTIONS",
    "MTU_OPTIONS",
    "CniNetwork",
    "ConflistRecord",
    "ConflistRecords",
    "HostLinks",
    "NetworkOptions",
    "bridge_for",
    "parse_options",
    "write_conflist",
]

BRIDGE_OPTIONS = ("com.docker.network.bridge.name", "bridge")
MTU_OPTIONS = ("com.docker.network.driver.mtu", "mtu")
KNOWN_OPTIONS = BRIDGE_OPTIONS + MTU_OPTIONS
_IFNAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,14}$")


@dataclass(frozen=True)
class NetworkOptions:
    """The driver options of a generated network (``nyx network create -o k=v``)."""

    bridge: str | None = None
    mtu: int | None = None


def _one(name: str, options: Mapping[str, str], keys: tuple[str, ...]) -> str | None:
    given = {k: options[k] for k in keys if k in options}
    if len(set(given.values())) > 1:
        shown = ", ".join(f"{k}={v!r}" for k, v in given.items())
        raise ConfigError(f"network {name!r}: options {shown} disagree")
    return next(iter(given.values()), None)


def parse_options(name: str, options: Mapping[str, str]) -> NetworkOptions:
    """Validate a network's options; unknown keys and bad values are refused by name."""
    unknown = sorted(set(options) - set(KNOWN_OPTIONS))
    if unknown:
        raise ConfigError(
            f"network {name!r}: unknown option(s) {', '.join(unknown)} for the cni driver "
            f"(it knows {', '.join(KNOWN_OPTIONS)}; anything else goes in your own conflist)"
        )
    bridge = _one(name, options, BRIDGE_OPTIONS)
    if bridge is not None and not _IFNAME_RE.match(bridge):
        raise ConfigError(
            f"network {name!r}: option bridge {bridge!r} is not an interface name "
            "(1-15 letters, digits, '_', '.', '-')"
        )
    mtu_text = _one(name, options, MTU_OPTIONS)
    mtu = None
    if mtu_text is not None:
        try:
            mtu = int(mtu_text)
        except ValueError:
            mtu = -1
        if not 68 <= mtu <= 65535:
            raise ConfigError(
                f"network {name!r}: option mtu {mtu_text!r} must be a number from 68 to 65535"
            )
    return NetworkOptions(bridge=bridge, mtu=mtu)


def bridge_for(network: str) -> str:
    """The bridge of a generated network: ``cni-<name>``, or when that is longer than 15
    characters ``cni-<4 chars>-<6 hex of a hash>``."""
    cand = f"cni-{network}"
    if _IFNAME_RE.match(cand):
        return cand
    return f"cni-{network[:4]}-{hashlib.sha256(network.encode()).hexdigest()[:6]}"


@dataclass
class CniNetwork:
    """One network the driver knows: its conflist, negotiated version and what it reports."""

    config: NetworkConfig
    version: str
    info: NetworkInfo | None = None
    spec: NetworkSpec | None = None
    generated: bool = False
    """nyx wrote the conflist and removes it with the network."""
    template: bool = False
    """The conflist is nyx's template (generated, or the default one nyx wrote): a
    container's later networks of this kind get no default route."""
    internal_subnets: list[Subnet] = field(default_factory=list)
    settled6: bool = False
    """Its bridge's IPv6 gateways were made usable (:meth:`HostLinks.settle_gateways6`)."""

    @property
    def name(self) -> str:
        return self.config.name


@dataclass
class ConflistRecord:
    """What nyx wrote for one network."""

    name: str
    path: str
    sha256: str
    bridge: str
    spec: dict[str, Any]

    def owns(self, path: Path) -> bool:
        """True when ``path`` is the file nyx wrote, unchanged."""
        try:
            return str(path) == self.path and _sha256(path.read_bytes()) == self.sha256
        except OSError:
            return False


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ConflistRecords:
    """``<state dir>/cni/conflists/<network>.json``: one record per conflist nyx wrote."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir) / "cni" / "conflists"

    def get(self, name: str) -> ConflistRecord | None:
        try:
            obj = json.loads((self.dir / f"{name}.json").read_bytes())
            return ConflistRecord(**obj)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            logger.warning("ignoring unreadable CNI conflist record {}: {}", name, exc)
            return None

    def all(self) -> list[ConflistRecord]:
        try:
            names = sorted(p.stem for p in self.dir.glob("*.json"))
        except OSError:
            return []
        return [r for r in (self.get(n) for n in names) if r is not None]

    def put(self, rec: ConflistRecord) -> None:
        path = self.dir / f"{rec.name}.json"
        _write_atomic(path, json.dumps(rec.__dict__, indent=2) + "\n", mode=0o600)

    def delete(self, name: str) -> None:
        try:
            (self.dir / f"{name}.json").unlink()
        except FileNotFoundError:
            pass


def _write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_conflist(path: Path, obj: Mapping[str, Any]) -> str:
    """Write a conflist atomically (temp file + rename); returns its SHA-256."""
    text = json.dumps(obj, indent=2) + "\n"
    _write_atomic(path, text)
    return _sha256(text.encode())


# ------------------------------------------------------------------ host links (ip binary)


class HostLinks:
    """The few link questions the driver asks of its network namespace, through the ``ip``
    binary (the driver stays exec-only). It forks from the calling thread, so it runs in that
    thread's namespace, like the plugins. Unit tests replace it."""

    def _ip(self, *args: str) -> subprocess.CompletedProcess[str]:
        exe = shutil.which("ip", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
        if exe is None:
            raise BackendError("the cni driver needs the ip binary (apt-get install iproute2)")
        return subprocess.run([exe, *args], capture_output=True, text=True, timeout=30, check=False)

    def _sysctl(self, key: str, value: str) -> None:
        """Write ``/proc/sys/<key>`` (of the calling thread's network namespace)."""
        Path("/proc/sys", key).write_text(value)

    def kind(self, name: str) -> str | None:
        """The kind of link ``name`` (``"bridge"``, ``"veth"``, ``""`` for a plain device),
        or None when there is no such link."""
        proc = self._ip("-d", "-j", "link", "show", "dev", name)
        if proc.returncode != 0:
            return None
        try:
            (link,) = json.loads(proc.stdout)
        except ValueError as exc:
            raise BackendError(f"ip link show dev {name}: unreadable output") from exc
        return str((link.get("linkinfo") or {}).get("info_kind") or "")

    def ports(self, name: str) -> list[str]:
        """The links enslaved to bridge ``name``."""
        proc = self._ip("-j", "link", "show", "master", name)
        if proc.returncode != 0:
            return []
        return [str(link.get("ifname")) for link in json.loads(proc.stdout or "[]")]

    def settle_gateways6(self, bridge: str, gateways: Sequence[ipaddress.IPv6Interface]) -> None:
        """Make IPv6 gateways on ``bridge`` usable at once, as the native driver's ``nodad``
        does. The bridge plugin adds them with duplicate address detection, so each stays
        tentative (not a local address: no DNS, no next hop) until DAD has run, about a
        second after the bridge gets its first port, and again whenever it loses its last
        one. DAD is turned off on the bridge (``accept_dad=0``) and a gateway still
        tentative is deleted and added again ``nodad``."""
        try:
            self._sysctl(f"net/ipv6/conf/{bridge}/accept_dad", "0")
        except OSError as exc:
            raise BackendError(f"bridge {bridge!r}: cannot turn DAD off: {exc}") from exc
        proc = self._ip("-6", "-j", "addr", "show", "dev", bridge)
        if proc.returncode != 0:
            raise BackendError(f"bridge {bridge!r}: {proc.stderr.strip()}")
        found = {
            a.get("local"): a
            for link in json.loads(proc.stdout or "[]")
            for a in link.get("addr_info", [])
        }
        for gw in gateways:
            addr = found.get(str(gw.ip))
            if addr is None or not addr.get("tentative"):
                continue
            for args in (("del", str(gw), "dev", bridge), ("add", str(gw), "dev", bridge, "nodad")):
                done = self._ip("addr", *args)
                if done.returncode != 0:
                    raise BackendError(
                        f"bridge {bridge!r}: ip addr {' '.join(args)}: {done.stderr.strip()}"
                    )

    def delete_bridge(self, name: str) -> None:
        """Delete bridge ``name`` if it exists, is a bridge and has no port left."""
        kind = self.kind(name)
        if kind is None:
            return
        if kind != "bridge":
            raise BackendError(
                f"bridge {name!r}: the link is a {kind or 'device'}, not a bridge; kept"
            )
        ports = self.ports(name)
        if ports:
            raise BackendError(f"bridge {name!r}: still has ports {', '.join(ports)}; kept")
        proc = self._ip("link", "delete", "dev", name)
        if proc.returncode != 0 and self.kind(name) is not None:
            raise BackendError(f"bridge {name!r}: cannot delete: {proc.stderr.strip()}")
