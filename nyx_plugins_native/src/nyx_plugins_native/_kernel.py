"""Kernel checks and sysctls, in the calling thread's network namespace.

``/proc/sys/net`` shows the namespace of the thread that opens the file, so writing here
changes the namespace nyxd (or the test thread) runs in, never the root one by accident.
"""

from __future__ import annotations

from pathlib import Path

from nyx_core.errors import ConfigError, NetlinkError

__all__ = ["check_kernel", "set_sysctl"]

_PROC_SYS = Path("/proc/sys")


def set_sysctl(key: str, value: str) -> None:
    """Set ``key`` (dotted) to ``value`` when it differs; a clear error when impossible."""
    path = _PROC_SYS / key.replace(".", "/")
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
