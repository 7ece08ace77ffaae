"""Kernel checks and sysctls, in the calling thread's network namespace.

``/proc/sys/net`` shows the namespace of the thread that opens the file, so writing here
changes the namespace nyxd (or the test thread) runs in, never the root one by accident.

The per-container writes go through :func:`write_netns_sysctl`: a path under ``/proc/sys``
is looked up in the kernel's dentry cache, where the ``net/ipv6``-like directories of every
network namespace whose sysctls were ever opened hang under one shared parent, so each
lookup walks one hash chain per namespace (``proc_sys_compare`` for each). With 1,000
containers a write of ``disable_ipv6`` took ~1.4 ms instead of 0.07. A private procfs
instance (``fsopen``/``fsmount``, never attached anywhere) has only the entries of the
namespace it is used in, so the write stays flat.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from pathlib import Path

from nyx_core.errors import ConfigError, NetlinkError

__all__ = [
    "check_kernel",
    "enable_ipv6_forwarding",
    "ipv6_available",
    "set_sysctl",
    "write_netns_sysctl",
]

_PROC_SYS = Path("/proc/sys")
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
# fsopen, fsconfig, fsmount: one number on every architecture with the unified syscall
# table (Linux 5.2+); alpha, ia64 and mips number them differently: /proc/sys there
_MOUNT_API = platform.machine() in {
    "x86_64",
    "aarch64",
    "arm64",
    "armv7l",
    "armv6l",
    "i386",
    "i686",
    "ppc64le",
    "ppc64",
    "s390x",
    "riscv64",
    "loongarch64",
}
_SYS_FSOPEN, _SYS_FSCONFIG, _SYS_FSMOUNT = 430, 431, 432
_FSOPEN_CLOEXEC = _FSMOUNT_CLOEXEC = 1
_FSCONFIG_CMD_CREATE = 6
# why the private instance is not used (set once: ENOSYS, EPERM from seccomp or a user
# namespace, a procfs that refuses new instances); every write then goes through /proc/sys
_private_proc_off: str | None = None if _MOUNT_API else f"{platform.machine()}: not tried"


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
        write_netns_sysctl(str(path.relative_to(_PROC_SYS)), value)
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


def _syscall(number: int, *args: object) -> int:
    rc = int(_libc.syscall(number, *args))
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return rc


def _private_proc() -> int | None:
    """A detached procfs instance (a mount fd), None when this kernel cannot make one."""
    global _private_proc_off
    if _private_proc_off is not None:
        return None
    step = "fsopen"
    fs = -1
    try:
        fs = _syscall(_SYS_FSOPEN, b"proc", _FSOPEN_CLOEXEC)
        step = "fsconfig"
        _syscall(_SYS_FSCONFIG, fs, _FSCONFIG_CMD_CREATE, None, None, 0)
        step = "fsmount"
        return _syscall(_SYS_FSMOUNT, fs, _FSMOUNT_CLOEXEC, 0)
    except OSError as exc:
        if exc.errno in (errno.ENOMEM, errno.EMFILE, errno.ENFILE):
            raise  # a passing shortage, not a kernel without the API
        _private_proc_off = f"{step}: {exc.strerror}"
        return None
    finally:
        if fs >= 0:
            os.close(fs)


def write_netns_sysctl(path: str, value: str) -> None:
    """Write ``value`` to ``/proc/sys/<path>`` of the calling thread's network namespace.

    Through a private procfs instance made for this one write (see the module's
    docstring), else through ``/proc/sys``. Raises what ``open``/``write`` raise
    (``FileNotFoundError`` when the key does not exist).
    """
    data = value.encode()
    mnt = _private_proc()
    if mnt is None:
        with open(_PROC_SYS / path, "wb", buffering=0) as f:
            f.write(data)
        return
    try:
        fd = os.open(f"sys/{path}", os.O_WRONLY | os.O_CLOEXEC, dir_fd=mnt)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    finally:
        os.close(mnt)


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
