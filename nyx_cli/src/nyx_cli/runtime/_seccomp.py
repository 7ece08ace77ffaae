"""The seccomp profile of a container: Docker's default allow list, for a capability set.

:func:`seccomp_profile` returns the OCI ``linux.seccomp`` object runc installs before it
execs the container's process. It follows Docker's default profile (moby, 2026, including
the removal of io_uring in Docker 25 and the AF_ALG/AF_VSOCK socket rule) and is built the
way Docker builds it at container start:

- everything not listed is refused with EPERM (``defaultAction`` ERRNO);
- the groups below are allowed to every container; some only with the capability that
  makes the call useful (``requires``), some only without a capability (``unless``), some
  only on one architecture;
- ``clone`` is allowed only without namespace flags and ``clone3`` answers ENOSYS, unless
  the container has CAP_SYS_ADMIN: clone3 takes its flags in memory seccomp cannot read,
  and ENOSYS makes libc fall back to clone. This is what keeps a container from creating
  a user namespace (where it would hold every capability, and reach nf_tables with it).

The architectures are the machine's and the compat ABIs it runs (x86_64: x86 and x32),
except x32 where the kernel refuses x32 calls anyway (most distributions' kernels: built
without it, or Debian's ``syscall.x32=n`` default; :func:`x32_abi` asks once): runc
compiles the filter once per listed architecture on every start (~5 ms for x32 alone
here), and the only change is that an x32 call is refused by the filter (the thread is
killed, as for any architecture not listed) instead of by the kernel (ENOSYS).

Syscall names the installed libseccomp does not know are skipped by runc; syscalls newer
than every name it knows answer ENOSYS (runc's stub), so new libc fallbacks keep working.
The profile is a function of the capability set: adding a capability later also allows
the calls Docker ties to it (CAP_SYS_PTRACE: ptrace's relatives; CAP_SYS_ADMIN: mount...).
"""

from __future__ import annotations

import errno
import functools
import os
import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from nyx_core.errors import ConfigError

__all__ = [
    "ARCHITECTURES",
    "CAPABILITIES",
    "DEFAULT_CAPABILITIES",
    "NYX_REFUSED",
    "capability_set",
    "normalize_capability",
    "seccomp_profile",
    "x32_abi",
]

ALLOW = "SCMP_ACT_ALLOW"
ERRNO = "SCMP_ACT_ERRNO"

#: ``uname -m`` -> the native seccomp architecture and the compat ABIs it can run
ARCHITECTURES: dict[str, tuple[str, ...]] = {
    "x86_64": ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"),
    "aarch64": ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"),
}

_CAPABILITY_NAMES = """
    CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP
    LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER
    SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE
    SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP
    MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF
    CHECKPOINT_RESTORE
"""
#: every Linux capability, to check a capability set before it reaches runc
CAPABILITIES = frozenset("CAP_" + name for name in _CAPABILITY_NAMES.split())
#: docker's default set, the capabilities of a container without cap_add / cap_drop
DEFAULT_CAPABILITIES = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]


def normalize_capability(name: str, field: str = "capabilities") -> str:
    """``net_raw``, ``NET_RAW`` or ``CAP_NET_RAW`` as ``CAP_NET_RAW``; ``all`` as ``ALL``.

    :raises ConfigError: naming ``field`` and the value, for a name that is no capability.
    """
    if not isinstance(name, str):
        raise ConfigError(f"{field}: {name!r} is not a capability name")
    text = name.strip().upper()
    if text == "ALL":
        return "ALL"
    full = text if text.startswith("CAP_") else "CAP_" + text
    if full not in CAPABILITIES:
        raise ConfigError(f"{field}: unknown capability {name!r}")
    return full


def capability_set(
    add: Iterable[str] = (), drop: Iterable[str] = (), base: Iterable[str] = DEFAULT_CAPABILITIES
) -> list[str]:
    """The capabilities of a container: docker's rules (moby ``TweakCapabilities``).

    ``ALL`` in ``add``: every capability but those dropped; ``ALL`` in ``drop``: only those
    added; otherwise ``base`` less ``drop``, plus ``add`` (an added capability wins).
    """
    adds = [normalize_capability(c, "cap_add") for c in add]
    drops = {normalize_capability(c, "cap_drop") for c in drop}
    if "ALL" in adds:
        return [c for c in sorted(CAPABILITIES) if c not in drops]
    if "ALL" in drops:
        return list(dict.fromkeys(adds))
    kept = [c for c in base if c not in drops]
    return list(dict.fromkeys([*kept, *adds]))


#: Syscalls Docker's default profile allows to a container with nyx's default capabilities
#: that nyx refuses anyway, with the reason. None today: where nyx is stricter than Docker
#: it is in an argument filter (the socket families, see ``_socket_rules``).
NYX_REFUSED: dict[str, str] = {}

# clone(2) flags that create namespaces (CLONE_NEWTIME is only reachable through clone3
# and unshare, both refused without CAP_SYS_ADMIN).
_CLONE_NEWNS = 0x00020000
_CLONE_NEWCGROUP = 0x02000000
_CLONE_NEWUTS = 0x04000000
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
CLONE_NAMESPACE_FLAGS = (
    _CLONE_NEWNS
    | _CLONE_NEWCGROUP
    | _CLONE_NEWUTS
    | _CLONE_NEWIPC
    | _CLONE_NEWUSER
    | _CLONE_NEWPID
    | _CLONE_NEWNET
)
_AF_ALG = 38
_AF_VSOCK = 40


@dataclass(frozen=True)
class _Rule:
    names: tuple[str, ...]
    why: str
    requires: frozenset[str] = frozenset()  # every one of these capabilities
    unless: frozenset[str] = frozenset()  # none of these capabilities
    machines: frozenset[str] | None = None  # uname -m values; None: all
    not_machines: frozenset[str] = frozenset()
    min_kernel: tuple[int, int] | None = None
    args: tuple[dict[str, Any], ...] = ()
    action: str = ALLOW
    errno_ret: int | None = None


def _rule(names: str, why: str, **kw: Any) -> _Rule:
    return _Rule(tuple(sorted(names.split())), why, **kw)


def _caps(*names: str) -> frozenset[str]:
    return frozenset(names)


def _arg(index: int, op: str, value: int, value_two: int = 0) -> dict[str, Any]:
    return {"index": index, "value": value, "valueTwo": value_two, "op": op}


# -- allowed to every container ------------------------------------------------------------
# Grouped by what they are for. Names ending in 32/64/_time64 and the old spellings are the
# same calls for 32-bit ABIs (x86, arm) that run on a 64-bit host.
_EVERYONE = [
    _rule(
        """
        execve execveat exit exit_group fork vfork wait4 waitid waitpid restart_syscall
        getpid getppid gettid getpgid getpgrp setpgid getsid setsid set_tid_address
        set_robust_list get_robust_list rseq membarrier getcpu
        futex futex_time64 futex_waitv futex_wait futex_wake futex_requeue
        """,
        "run programs and threads, wait for children (clone is filtered below)",
    ),
    _rule(
        """
        kill tkill tgkill pidfd_open pidfd_send_signal process_mrelease pause alarm
        rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn
        rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo
        sigaltstack signalfd signalfd4 sigprocmask sigreturn
        """,
        "signals (only processes the container can see: its own pid namespace)",
    ),
    _rule(
        """
        brk mmap mmap2 munmap mremap mprotect madvise mincore msync remap_file_pages
        mlock mlock2 mlockall munlock munlockall memfd_create memfd_secret
        pkey_alloc pkey_free pkey_mprotect map_shadow_stack mseal
        """,
        "memory of the calling process (mlock is bounded by RLIMIT_MEMLOCK)",
    ),
    _rule(
        """
        open openat openat2 creat close close_range dup dup2 dup3 fcntl fcntl64 flock
        read write readv writev pread64 pwrite64 preadv pwritev preadv2 pwritev2
        lseek _llseek sendfile sendfile64 splice tee vmsplice copy_file_range pipe pipe2
        ioctl readahead fadvise64 fadvise64_64 fallocate cachestat
        truncate truncate64 ftruncate ftruncate64 sync syncfs fsync fdatasync
        sync_file_range
        """,
        "file descriptors and I/O",
    ),
    _rule(
        """
        access faccessat faccessat2 chdir fchdir getcwd umask chmod fchmod fchmodat
        fchmodat2 chown chown32 fchown fchown32 fchownat lchown lchown32
        link linkat symlink symlinkat unlink unlinkat rename renameat renameat2
        mkdir mkdirat rmdir mknod mknodat readlink readlinkat getdents getdents64
        stat stat64 lstat lstat64 fstat fstat64 fstatat64 newfstatat statx
        statfs statfs64 fstatfs fstatfs64 utime utimes utimensat utimensat_time64
        futimesat name_to_handle_at listmount statmount
        """,
        "paths and metadata (devices: the cgroup device rules; mounts: read-only listing)",
    ),
    _rule(
        """
        getxattr lgetxattr fgetxattr getxattrat setxattr lsetxattr fsetxattr setxattrat
        listxattr llistxattr flistxattr listxattrat removexattr lremovexattr
        fremovexattr removexattrat
        """,
        "extended attributes (security.* and trusted.* need capabilities nyx does not give)",
    ),
    _rule(
        """
        select _newselect pselect6 pselect6_time64 poll ppoll ppoll_time64
        epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_wait epoll_wait_old
        epoll_pwait epoll_pwait2 eventfd eventfd2 inotify_init inotify_init1
        inotify_add_watch inotify_rm_watch fanotify_mark
        timerfd_create timerfd_settime timerfd_settime64 timerfd_gettime timerfd_gettime64
        """,
        "waiting for file descriptors (fanotify_mark needs fanotify_init: CAP_SYS_ADMIN)",
    ),
    _rule(
        """
        io_setup io_destroy io_submit io_cancel io_getevents io_pgetevents
        io_pgetevents_time64
        """,
        "Linux AIO; io_uring is NOT here: it bypasses seccomp for the calls it makes, and "
        "Docker 25 dropped it (runc answers EPERM)",
    ),
    _rule(
        """
        clock_gettime clock_gettime64 clock_getres clock_getres_time64 clock_nanosleep
        clock_nanosleep_time64 nanosleep gettimeofday time times getitimer setitimer
        timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64
        timer_settime timer_settime64 adjtimex clock_adjtime clock_adjtime64
        """,
        "read clocks and timers (adjtimex can only read without CAP_SYS_TIME)",
    ),
    _rule(
        """
        accept accept4 bind connect listen getpeername getsockname getsockopt setsockopt
        recv recvfrom recvmsg recvmmsg recvmmsg_time64 send sendto sendmsg sendmmsg
        shutdown socketpair socketcall
        """,
        "sockets (socket(2) itself is filtered by family below; socketcall is the 32-bit x86 "
        "entry point, whose family seccomp cannot read: Docker keeps it, so does nyx)",
    ),
    _rule(
        """
        ipc msgctl msgget msgrcv msgsnd semctl semget semop semtimedop semtimedop_time64
        shmat shmctl shmdt shmget mq_getsetattr mq_notify mq_open mq_timedreceive
        mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink
        """,
        "System V and POSIX IPC (the container has its own IPC namespace)",
    ),
    _rule(
        """
        getuid getuid32 geteuid geteuid32 getgid getgid32 getegid getegid32
        getresuid getresuid32 getresgid getresgid32 getgroups getgroups32
        setuid setuid32 setgid setgid32 setreuid setreuid32 setregid setregid32
        setresuid setresuid32 setresgid setresgid32 setgroups setgroups32
        setfsuid setfsuid32 setfsgid setfsgid32 capget capset
        """,
        "credentials (changing them needs CAP_SETUID/CAP_SETGID, bounded by the cap set)",
    ),
    _rule(
        """
        sched_getaffinity sched_setaffinity sched_getattr sched_setattr sched_getparam
        sched_setparam sched_getscheduler sched_setscheduler sched_get_priority_max
        sched_get_priority_min sched_rr_get_interval sched_rr_get_interval_time64
        sched_yield getpriority setpriority ioprio_get ioprio_set
        getrlimit setrlimit ugetrlimit prlimit64 getrusage
        """,
        "scheduling and resource limits (raising either needs capabilities)",
    ),
    _rule(
        """
        uname sysinfo getrandom prctl seccomp get_thread_area set_thread_area
        landlock_create_ruleset landlock_add_rule landlock_restrict_self
        uretprobe riscv_hwprobe
        """,
        "system information, thread-local storage, and self-sandboxing (seccomp, landlock)",
    ),
    _rule(
        "ptrace process_vm_readv process_vm_writev",
        "debug a process of the container (since 4.8, ptrace cannot bypass seccomp)",
        min_kernel=(4, 8),
    ),
    # personality(2): only the Linux personalities (plain, UNAME26, their 32-bit twins) and
    # the query 0xffffffff, as Docker: the others turn on old exploit-friendly behaviour.
    *(
        _rule("personality", "query and the Linux personalities", args=(_arg(0, "SCMP_CMP_EQ", v),))
        for v in (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)
    ),
]


def _socket_rules() -> list[_Rule]:
    """socket(2) for every address family but AF_ALG (the kernel crypto API, a steady
    source of kernel bugs) and AF_VSOCK (talks to the hypervisor).

    Docker writes this as ``family < 38 or == 39 or > 40``. The kernel reads the family
    as a 32-bit int, but seccomp compares all 64 bits of the register: ``0xffffffff00000026``
    is ``> 40`` for seccomp and AF_ALG for the kernel. nyx lists the families above
    AF_VSOCK up to 63 (AF_MAX is 46 in Linux 6.x) with exact or masked compares that all
    require the upper 32 bits to be zero.
    """
    high_bits = 0xFFFFFFFF_FFFFFFFF
    ranges = [
        ("SCMP_CMP_LT", _AF_ALG, 0),  # 0..37
        ("SCMP_CMP_EQ", _AF_ALG + 1, 0),  # 39
        ("SCMP_CMP_EQ", 41, 0),
        ("SCMP_CMP_EQ", 42, 0),
        ("SCMP_CMP_EQ", 43, 0),
        ("SCMP_CMP_MASKED_EQ", high_bits & ~0x3, 44),  # 44..47
        ("SCMP_CMP_MASKED_EQ", high_bits & ~0xF, 48),  # 48..63
    ]
    rules = []
    for op, value, value_two in ranges:
        arg = _arg(0, op, value, value_two)  # MASKED_EQ: value is the mask, valueTwo the result
        rules.append(_rule("socket", "every family but AF_ALG and AF_VSOCK", args=(arg,)))
    return rules


# -- allowed on one architecture ---------------------------------------------------------
_ARCH_SPECIFIC = [
    _rule("arch_prctl", "x86-64 thread pointer (fs/gs)", machines=frozenset({"x86_64"})),
    _rule(
        "modify_ldt", "x86 segment descriptors (wine, old binaries)", machines=frozenset({"x86_64"})
    ),
    _rule(
        "arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush set_tls",
        "the 32-bit ARM ABI's own calls",
        machines=frozenset({"aarch64"}),
    ),
]

# -- tied to capabilities ----------------------------------------------------------------
_SYS_ADMIN = _caps("CAP_SYS_ADMIN")
_S390 = frozenset({"s390", "s390x"})
_BY_CAPABILITY = [
    _rule("open_by_handle_at", "open any inode (shocker)", requires=_caps("CAP_DAC_READ_SEARCH")),
    _rule(
        """
        bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie
        lsm_get_self_attr lsm_list_modules lsm_set_self_attr mount mount_setattr move_mount
        open_tree perf_event_open quotactl quotactl_fd setdomainname sethostname setns
        syslog umount umount2 unshare
        """,
        "namespaces, mounts, bpf, perf: CAP_SYS_ADMIN's calls",
        requires=_SYS_ADMIN,
    ),
    _rule(
        "clone",
        "fork and threads, but no namespace flags: no user namespace and its full cap set",
        unless=_SYS_ADMIN,
        not_machines=_S390,
        args=(_arg(0, "SCMP_CMP_MASKED_EQ", CLONE_NAMESPACE_FLAGS, 0),),
    ),
    _rule(
        "clone",
        "the same on s390, where the flags are clone's second argument",
        unless=_SYS_ADMIN,
        machines=_S390,
        args=(_arg(1, "SCMP_CMP_MASKED_EQ", CLONE_NAMESPACE_FLAGS, 0),),
    ),
    _rule(
        "clone3",
        "flags in memory seccomp cannot read; ENOSYS makes libc fall back to clone",
        unless=_SYS_ADMIN,
        action=ERRNO,
        errno_ret=errno.ENOSYS,
    ),
    _rule("reboot", "reboot (the pid namespace's)", requires=_caps("CAP_SYS_BOOT")),
    _rule("chroot", "chroot", requires=_caps("CAP_SYS_CHROOT")),
    _rule(
        "delete_module init_module finit_module",
        "kernel modules",
        requires=_caps("CAP_SYS_MODULE"),
    ),
    _rule("acct", "process accounting", requires=_caps("CAP_SYS_PACCT")),
    _rule(
        "kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace",
        "inspect other processes",
        requires=_caps("CAP_SYS_PTRACE"),
    ),
    _rule("iopl ioperm", "raw I/O ports", requires=_caps("CAP_SYS_RAWIO")),
    _rule(
        "settimeofday stime clock_settime clock_settime64",
        "set the (host-wide) clock",
        requires=_caps("CAP_SYS_TIME"),
    ),
    _rule("vhangup", "hang up the terminal", requires=_caps("CAP_SYS_TTY_CONFIG")),
    _rule(
        "get_mempolicy mbind set_mempolicy set_mempolicy_home_node",
        "NUMA memory policy",
        requires=_caps("CAP_SYS_NICE"),
    ),
    _rule("syslog", "the kernel log", requires=_caps("CAP_SYSLOG")),
    _rule("bpf", "bpf", requires=_caps("CAP_BPF")),
    _rule("perf_event_open", "perf", requires=_caps("CAP_PERFMON")),
]


def _kernel_release() -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


# getpid through the x32 ABI (39 | __X32_SYSCALL_BIT): the pid where the kernel runs x32
# calls, -1 (ENOSYS) where it does not; a seccomp filter above nyxd may kill the child
_X32_PROBE = (
    "import ctypes, os, sys\n"
    "sys.exit(0 if ctypes.CDLL(None).syscall(0x40000027) == os.getpid() else 3)"
)


@functools.cache
def x32_abi() -> bool:
    """Whether processes nyxd starts can make x32 system calls (an x86_64 kernel built
    with ``CONFIG_X86_X32_ABI``, x32 not turned off at boot, no seccomp filter above nyxd
    refusing them). Asked once, in a child process: a filter of nyxd's own service may
    kill the asker. True when the child cannot tell (the filter then lists x32, as
    Docker's does)."""
    if os.uname().machine != "x86_64":
        return False
    try:
        proc = subprocess.run(
            [sys.executable, "-S", "-I", "-c", _X32_PROBE],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return True
    return proc.returncode not in (3, -31)  # ENOSYS, or SIGSYS from a filter above


def seccomp_profile(
    capabilities: Iterable[str],
    *,
    machine: str | None = None,
    kernel: tuple[int, int] | None = None,
    x32: bool | None = None,
) -> dict[str, Any]:
    """The OCI ``linux.seccomp`` object for a container with ``capabilities`` (bounding set).

    :param machine: ``uname -m`` of the host (default: this one). x86_64 also covers the
        x86 and x32 ABIs, aarch64 the 32-bit ARM one; any other machine gets its native
        ABI only and no architecture-specific calls.
    :param kernel: ``(major, minor)`` of the running kernel (default: this one).
    :param x32: whether to list the x32 ABI on x86_64 (default: :func:`x32_abi` for this
        host, True for another machine).
    :raises ConfigError: a name that is not a Linux capability.
    """
    caps = frozenset(capabilities)
    unknown = sorted(caps - CAPABILITIES)
    if unknown:
        raise ConfigError(f"capabilities: unknown capability {', '.join(unknown)}")
    if x32 is None:
        x32 = x32_abi() if machine is None else True
    machine = machine or os.uname().machine
    kernel = kernel or _kernel_release()
    syscalls: list[dict[str, Any]] = []
    for rule in [*_EVERYONE, *_socket_rules(), *_ARCH_SPECIFIC, *_BY_CAPABILITY]:
        if not rule.requires <= caps or rule.unless & caps:
            continue
        if rule.machines is not None and machine not in rule.machines:
            continue
        if machine in rule.not_machines:
            continue
        if rule.min_kernel is not None and kernel < rule.min_kernel:
            continue
        names = [n for n in rule.names if n not in NYX_REFUSED]
        if not names:
            continue
        entry: dict[str, Any] = {"names": names, "action": rule.action}
        if rule.errno_ret is not None:
            entry["errnoRet"] = rule.errno_ret
        if rule.args:
            entry["args"] = [dict(a) for a in rule.args]
        syscalls.append(entry)
    return {
        "defaultAction": ERRNO,
        "defaultErrnoRet": errno.EPERM,
        "architectures": [a for a in ARCHITECTURES.get(machine, ()) if x32 or a != "SCMP_ARCH_X32"],
        "syscalls": syscalls,
    }
