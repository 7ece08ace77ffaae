"""Kernel checks and sysctls, in the calling thread's network namespace.

``/proc/sys/net`` shows the namespace of the thread that opens the file, so writing here
changes the namespace nyxd (or the test thread) runs in, never the root one by accident.
"""

from __future__ import annotations

from pathlib import Path

from nyx_core.errors import ConfigError, NetlinkError

__all__ = ["check_kernel", "enable_ipv6_forwarding", "ipv6_available", "set_sysctl"]

_PROC_SYS = Path("/proc/sys")


def set_sysctl(key: str, value: str, dev: str | None = None) -> None:
    """Set ``key`` (dotted) to ``value`` when it differs; a clear error when impossible.

    With ``dev``, ``key`` is a per-interface one (``net.ipv6.conf.{}.accept_ra``): the
    interface's name may hold dots (``eth0.100``), which are not path separators.
    """
    path = _PROC_SYS / key.replace(".", "/")
    if dev is not None:
        path = _PROC_SYS / key.replace(".", "/").replace("{}", dev)
        key = key.replace("{}", dev)
    try:
        if path.read_text().strip() == value:
            return
        path.write_text(value)
    except FileNotFoundError as exc:
        raise NetlinkError(
            f"sysctl {key} does not exist: the kernel lacks the feature "
            "(see docs/kernel-requirements.md)"
        ) from exc
    except OSError as exc:
        raise NetlinkError(
            f"cannot set sysctl {key}={value}: {exc.strerror} "
            "(nyxd needs root and a writable /proc/sys; see docs/kernel-requirements.md)"
        ) from exc


def check_kernel() -> None:
    """Verify what ``ensure_network`` needs before changing anything."""
    if not Path("/proc/self/ns/net").exists():
        raise ConfigError("the kernel has no network namespaces (CONFIG_NET_NS)")
    if not (_PROC_SYS / "net/ipv4/ip_forward").exists():
        raise NetlinkError("sysctl net.ipv4.ip_forward is missing: /proc/sys is not mounted")


def ipv6_available() -> bool:
    """Whether this namespace's kernel has IPv6 (not built out or disabled at boot)."""
    return (_PROC_SYS / "net/ipv6/conf/all/forwarding").exists()


def enable_ipv6_forwarding() -> list[str]:
    """``net.ipv6.conf.all.forwarding=1``, keeping the host's router advertisements.

    With forwarding on, an interface accepts router advertisements only with
    ``accept_ra=2``, and the kernel drops the default routes learned from them
    (``rt6_purge_dflt_routers``) except on such interfaces. So, before forwarding is
    turned on, every interface that accepted them (``accept_ra=1``) gets ``accept_ra=2``:
    an uplink configured by SLAAC keeps its default route and goes on learning. Nothing
    changes when forwarding is on already (whoever turned it on chose).

    :returns: the interfaces whose ``accept_ra`` was raised to 2.
    """
    if (_PROC_SYS / "net/ipv6/conf/all/forwarding").read_text().strip() == "1":
        return []
    raised = []
    conf = _PROC_SYS / "net/ipv6/conf"
    for dev in sorted(p.name for p in conf.iterdir()):
        if dev in ("all", "default", "lo"):
            continue
        try:
            accept = (conf / dev / "accept_ra").read_text().strip()
            forwarding = (conf / dev / "forwarding").read_text().strip()
        except OSError:
            continue  # the link went away meanwhile
        if accept == "1" and forwarding == "0":
            set_sysctl("net.ipv6.conf.{}.accept_ra", "2", dev)
            raised.append(dev)
    set_sysctl("net.ipv6.conf.all.forwarding", "1")
    return raised
