"""The seccomp profile builder against Docker's default profile, written out here.

The lists below are Docker's default profile (moby/profiles ``seccomp/default_linux.go``,
May 2026) as a reader would copy them, not nyx's implementation: the tests check that nyx
allows what Docker allows a container with nyx's capabilities, refuses the rest, and that
the capability-, architecture- and argument-conditional parts behave as Docker's do.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from nyx_cli.daemon._settings import DaemonSettings
from nyx_cli.runtime import DEFAULT_CAPABILITIES, ProcessSpec, RuncRuntime, _seccomp
from nyx_cli.runtime._seccomp import NYX_REFUSED, seccomp_profile, x32_abi
from nyx_core import load_settings
from nyx_core.errors import ConfigError


def _names(text: str) -> set[str]:
    return set(text.split())


# Docker's default: allowed to every container, no condition (361 names).
DOCKER_UNCONDITIONAL = _names(
    """
    _llseek _newselect accept accept4 access adjtimex alarm bind brk cachestat capget capset
    chdir chmod chown chown32 clock_adjtime clock_adjtime64 clock_getres clock_getres_time64
    clock_gettime clock_gettime64 clock_nanosleep clock_nanosleep_time64 close close_range
    connect copy_file_range creat dup dup2 dup3 epoll_create epoll_create1 epoll_ctl
    epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 execve
    execveat exit exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate
    fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown fchown32 fchownat fcntl fcntl64
    fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstat64 fstatat64
    fstatfs fstatfs64 fsync ftruncate ftruncate64 futex futex_requeue futex_time64
    futex_wait futex_waitv futex_wake futimesat get_robust_list get_thread_area getcpu
    getcwd getdents getdents64 getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups
    getgroups32 getitimer getpeername getpgid getpgrp getpid getppid getpriority getrandom
    getresgid getresgid32 getresuid getresuid32 getrlimit getrusage getsid getsockname
    getsockopt gettid gettimeofday getuid getuid32 getxattr getxattrat inotify_add_watch
    inotify_init inotify_init1 inotify_rm_watch io_cancel io_destroy io_getevents
    io_pgetevents io_pgetevents_time64 io_setup io_submit ioctl ioprio_get ioprio_set ipc
    kill landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown lchown32
    lgetxattr link linkat listen listmount listxattr listxattrat llistxattr lremovexattr
    lseek lsetxattr lstat lstat64 madvise map_shadow_stack membarrier memfd_create
    memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap mmap2
    mprotect mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64
    mq_timedsend mq_timedsend_time64 mq_unlink mremap mseal msgctl msgget msgrcv msgsnd
    msync munlock munlockall munmap name_to_handle_at nanosleep newfstatat open openat
    openat2 pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect
    poll ppoll ppoll_time64 prctl pread64 preadv preadv2 prlimit64 process_mrelease pselect6
    pselect6_time64 pwrite64 pwritev pwritev2 read readahead readlink readlinkat readv recv
    recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages removexattr removexattrat
    rename renameat renameat2 restart_syscall riscv_hwprobe rmdir rseq rt_sigaction
    rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait
    rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_get_priority_max sched_get_priority_min
    sched_getaffinity sched_getattr sched_getparam sched_getscheduler sched_rr_get_interval
    sched_rr_get_interval_time64 sched_setaffinity sched_setattr sched_setparam
    sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop
    semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto set_robust_list
    set_thread_area set_tid_address setfsgid setfsgid32 setfsuid setfsuid32 setgid setgid32
    setgroups setgroups32 setitimer setpgid setpriority setregid setregid32 setresgid
    setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit setsid setsockopt setuid
    setuid32 setxattr setxattrat shmat shmctl shmdt shmget shutdown sigaltstack signalfd
    signalfd4 sigprocmask sigreturn socketcall socketpair splice stat stat64 statfs statfs64
    statmount statx symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time
    timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime
    timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime
    timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat
    uretprobe utime utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid
    write writev
    """
)
# Docker's conditional groups that apply to nyx's capabilities on an x86-64 kernel >= 4.8.
DOCKER_KERNEL_4_8 = {"ptrace", "process_vm_readv", "process_vm_writev"}
DOCKER_X86_64 = {"arch_prctl", "modify_ldt"}
DOCKER_AARCH64 = {
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "sync_file_range2",
    "breakpoint",
    "cacheflush",
    "set_tls",
}
DOCKER_CAP_SYS_CHROOT = {"chroot"}
# Docker's CAP_SYS_ADMIN group (also what unshare/setns/mount need).
DOCKER_CAP_SYS_ADMIN = _names(
    """
    bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie
    lsm_get_self_attr lsm_list_modules lsm_set_self_attr mount mount_setattr move_mount
    open_tree perf_event_open quotactl quotactl_fd setdomainname sethostname setns syslog
    umount umount2 unshare
    """
)
DOCKER_CAP_SYS_PTRACE = {
    "kcmp",
    "pidfd_getfd",
    "process_madvise",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
}
# Never allowed without a capability nyx does not give by default.
MUST_REFUSE = DOCKER_CAP_SYS_ADMIN - {"clone", "clone3"} | {
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "keyctl",
    "add_key",
    "request_key",
    "kcmp",
    "pidfd_getfd",
    "process_madvise",
    "userfaultfd",
    "pivot_root",
    "open_by_handle_at",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "acct",
    "swapon",
    "swapoff",
    "iopl",
    "ioperm",
    "settimeofday",
    "clock_settime",
    "stime",
    "vhangup",
    "mbind",
    "set_mempolicy",
    "move_pages",
    "migrate_pages",
    "nfsservctl",
    "uselib",
    "vm86",
    "vm86old",
    "_sysctl",
}
CLONE_NAMESPACES = 0x7E020000  # NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
EPERM, ENOSYS = errno.EPERM, errno.ENOSYS


def _profile(caps: list[str] | set[str] = DEFAULT_CAPABILITIES, **kw: Any) -> dict[str, Any]:
    kw.setdefault("machine", "x86_64")
    kw.setdefault("kernel", (6, 1))
    return seccomp_profile(caps, **kw)


def _unconditional(profile: dict[str, Any]) -> set[str]:
    return {
        name
        for rule in profile["syscalls"]
        if rule["action"] == "SCMP_ACT_ALLOW" and not rule.get("args")
        for name in rule["names"]
    }


def _rules_for(profile: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [r for r in profile["syscalls"] if name in r["names"]]


def _mentioned(profile: dict[str, Any]) -> set[str]:
    return {name for rule in profile["syscalls"] for name in rule["names"]}


def _matches(arg: dict[str, Any], value: int) -> bool:
    """libseccomp's comparison on a 64-bit register value."""
    op, a, b = arg["op"], arg["value"], arg.get("valueTwo", 0)
    return {
        "SCMP_CMP_EQ": lambda: value == a,
        "SCMP_CMP_NE": lambda: value != a,
        "SCMP_CMP_LT": lambda: value < a,
        "SCMP_CMP_LE": lambda: value <= a,
        "SCMP_CMP_GT": lambda: value > a,
        "SCMP_CMP_GE": lambda: value >= a,
        "SCMP_CMP_MASKED_EQ": lambda: value & a == b,
    }[op]()


def _action(profile: dict[str, Any], name: str, arg0: int) -> tuple[str, int | None]:
    """What the filter does with ``name(arg0, ...)``: (action, errno)."""
    for rule in _rules_for(profile, name):
        args = rule.get("args") or []
        if all(_matches(a, arg0) for a in args if a["index"] == 0):
            return rule["action"], rule.get("errnoRet")
    return profile["defaultAction"], profile["defaultErrnoRet"]


def test_default_is_eperm_and_architectures_per_machine() -> None:
    x86 = _profile()
    assert (x86["defaultAction"], x86["defaultErrnoRet"]) == ("SCMP_ACT_ERRNO", EPERM)
    assert x86["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    arm = _profile(machine="aarch64")
    assert arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert _profile(machine="riscv64")["architectures"] == []  # native ABI only


def test_x32_is_listed_only_where_the_kernel_runs_it() -> None:
    assert _profile(x32=False)["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]
    assert _profile(x32=True)["architectures"][-1] == "SCMP_ARCH_X32"
    assert _profile(machine="aarch64", x32=False)["architectures"] == [
        "SCMP_ARCH_AARCH64",
        "SCMP_ARCH_ARM",
    ]
    # this host's profile follows the probe
    here = seccomp_profile(DEFAULT_CAPABILITIES)["architectures"]
    assert ("SCMP_ARCH_X32" in here) == (os.uname().machine == "x86_64" and x32_abi())


@pytest.mark.parametrize(
    ("outcome", "listed"),
    [
        (0, True),  # the x32 getpid answered the pid
        (3, False),  # ENOSYS: the kernel has no x32
        (-31, False),  # SIGSYS: a filter above nyxd refuses x32 calls
        (1, True),  # the child failed otherwise: cannot tell, keep x32 as Docker does
        (OSError("no interpreter"), True),
    ],
)
def test_the_x32_probe_reads_its_child(
    monkeypatch: pytest.MonkeyPatch, outcome: int | Exception, listed: bool
) -> None:
    def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
        assert argv[1:4] == ["-S", "-I", "-c"] and "0x40000027" in argv[4]
        if isinstance(outcome, Exception):
            raise outcome
        return subprocess.CompletedProcess(argv, outcome, b"", b"")

    monkeypatch.setattr(_seccomp.subprocess, "run", run)
    monkeypatch.setattr(_seccomp.os, "uname", lambda: _Uname("x86_64"))
    assert _seccomp.x32_abi.__wrapped__() is listed


class _Uname:
    def __init__(self, machine: str) -> None:
        self.machine = machine


def test_allows_what_docker_allows_for_nyx_capabilities_and_nothing_more() -> None:
    docker = DOCKER_UNCONDITIONAL | DOCKER_KERNEL_4_8 | DOCKER_X86_64 | DOCKER_CAP_SYS_CHROOT
    allowed = _unconditional(_profile())
    for name, why in NYX_REFUSED.items():
        assert name in docker and why.strip(), name  # a documented refusal of a Docker allow
    assert sorted(docker - set(NYX_REFUSED) - allowed) == []
    assert sorted(allowed - docker) == []


def test_architecture_specific_calls() -> None:
    arm = _unconditional(_profile(machine="aarch64"))
    assert arm >= DOCKER_AARCH64 and not DOCKER_X86_64 & arm
    x86 = _unconditional(_profile())
    assert x86 >= DOCKER_X86_64 and not DOCKER_AARCH64 & x86
    other = _unconditional(_profile(machine="riscv64"))
    assert not (DOCKER_X86_64 | DOCKER_AARCH64) & other


def test_ptrace_only_on_kernels_where_it_cannot_bypass_seccomp() -> None:
    assert _unconditional(_profile(kernel=(4, 8))) >= DOCKER_KERNEL_4_8
    assert not DOCKER_KERNEL_4_8 & _unconditional(_profile(kernel=(4, 7)))


def test_refused_with_nyx_capabilities() -> None:
    profile = _profile()
    for name in sorted(MUST_REFUSE):
        assert _action(profile, name, 0) == ("SCMP_ACT_ERRNO", EPERM), name
    assert not _mentioned(profile) & MUST_REFUSE


def test_clone_without_namespace_flags_and_clone3_enosys() -> None:
    profile = _profile()
    assert "clone" not in _unconditional(profile)
    sigchld = 17
    assert _action(profile, "clone", sigchld)[0] == "SCMP_ACT_ALLOW"  # fork()
    assert _action(profile, "clone", 0x003D0F00)[0] == "SCMP_ACT_ALLOW"  # pthread_create()
    for bit in range(64):
        flag = 1 << bit
        expected = "SCMP_ACT_ERRNO" if flag & CLONE_NAMESPACES else "SCMP_ACT_ALLOW"
        assert _action(profile, "clone", sigchld | flag)[0] == expected, hex(flag)
    assert _action(profile, "clone3", 0) == ("SCMP_ACT_ERRNO", ENOSYS)
    # s390 passes the flags second (Docker's special case): the rule must read that one
    (s390,) = _rules_for(_profile(machine="s390x"), "clone")
    assert [a["index"] for a in s390["args"]] == [1]


def test_socket_families_but_alg_and_vsock_even_with_high_bits() -> None:
    profile = _profile()
    assert "socket" not in _unconditional(profile)
    for family in range(64):
        expected = "SCMP_ACT_ERRNO" if family in (38, 40) else "SCMP_ACT_ALLOW"
        assert _action(profile, "socket", family)[0] == expected, family
        # the kernel reads an int: any upper bits would reach that same family
        for high in (1 << 32, 0xFFFFFFFF << 32, 1 << 63):
            assert _action(profile, "socket", high | family)[0] == "SCMP_ACT_ERRNO"


def test_personality_only_the_linux_ones() -> None:
    profile = _profile()
    for value in (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF):
        assert _action(profile, "personality", value)[0] == "SCMP_ACT_ALLOW"
    for value in (0x0400000, 0x0040000, 0x0200000, 0x4, 0x1 << 32):  # ADDR_NO_RANDOMIZE...
        assert _action(profile, "personality", value) == ("SCMP_ACT_ERRNO", EPERM)


def test_capabilities_bring_their_calls() -> None:
    admin = _profile([*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"])
    assert _unconditional(admin) >= DOCKER_CAP_SYS_ADMIN
    assert _action(admin, "clone3", 0)[0] == "SCMP_ACT_ALLOW"
    assert _action(admin, "clone", CLONE_NAMESPACES)[0] == "SCMP_ACT_ALLOW"
    ptrace = _unconditional(_profile([*DEFAULT_CAPABILITIES, "CAP_SYS_PTRACE"]))
    assert ptrace >= DOCKER_CAP_SYS_PTRACE
    assert "bpf" in _unconditional(_profile(["CAP_BPF"]))
    assert "perf_event_open" in _unconditional(_profile(["CAP_PERFMON"]))
    assert "open_by_handle_at" in _unconditional(_profile(["CAP_DAC_READ_SEARCH"]))
    assert "chroot" not in _unconditional(_profile(["CAP_CHOWN"]))
    everything = _profile([*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN", "CAP_SYS_PTRACE"])
    assert not {"io_uring_setup", "io_uring_enter", "io_uring_register"} & _mentioned(everything)


def test_unknown_capability_is_refused() -> None:
    with pytest.raises(ConfigError, match="CAP_NOPE"):
        seccomp_profile(["CAP_CHOWN", "CAP_NOPE"])
    with pytest.raises(ConfigError, match="CAP_NOPE"):
        RuncRuntime(Path("/nonexistent"), capabilities=["CAP_NOPE"])


# -- the bundle ------------------------------------------------------------------------------


def _bundle(tmp_path: Path, **runtime_kw: Any) -> dict[str, Any]:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True, exist_ok=True)
    (rootfs / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    RuncRuntime(tmp_path / "runc", **runtime_kw).write_bundle(
        tmp_path / "b",
        rootfs=rootfs,
        process=ProcessSpec(args=["true"]),
        hostname="h",
        netns_path=None,
        mounts=[],
    )
    config: dict[str, Any] = json.loads((tmp_path / "b" / "config.json").read_text())
    return config


def test_bundle_denies_io_uring_namespaces_and_limits_pids(tmp_path: Path) -> None:
    config = _bundle(tmp_path)
    seccomp = config["linux"]["seccomp"]
    assert seccomp["defaultAction"] == "SCMP_ACT_ERRNO"
    for name in ("io_uring_setup", "io_uring_enter", "io_uring_register", "unshare", "setns"):
        assert _action(seccomp, name, 0) == ("SCMP_ACT_ERRNO", EPERM), name
    assert _action(seccomp, "clone", 0x10000000 | 17)[0] == "SCMP_ACT_ERRNO"  # CLONE_NEWUSER
    assert _action(seccomp, "clone3", 0) == ("SCMP_ACT_ERRNO", ENOSYS)
    assert config["linux"]["resources"]["pids"] == {"limit": 2048}  # podman's default
    caps = config["process"]["capabilities"]
    assert caps["bounding"] == caps["effective"] == caps["permitted"] == DEFAULT_CAPABILITIES
    assert config["process"]["noNewPrivileges"] is False  # as Docker: setuid binaries work


def test_bundle_capabilities_and_pids_limit_follow_the_runtime(tmp_path: Path) -> None:
    config = _bundle(tmp_path, capabilities=["CAP_CHOWN", "CAP_SYS_PTRACE"], pids_limit=64)
    assert config["process"]["capabilities"]["bounding"] == ["CAP_CHOWN", "CAP_SYS_PTRACE"]
    assert "kcmp" in _unconditional(config["linux"]["seccomp"])
    assert "chroot" not in _unconditional(config["linux"]["seccomp"])
    assert config["linux"]["resources"]["pids"] == {"limit": 64}
    for unlimited in (0, -1):
        config = _bundle(tmp_path, pids_limit=unlimited)
        assert "pids" not in config["linux"]["resources"]
        assert config["linux"]["resources"]["devices"] == [{"allow": False, "access": "rwm"}]
    for bad in (-2, True, "10"):
        with pytest.raises(ConfigError, match="pids_limit"):
            RuncRuntime(tmp_path / "runc", pids_limit=bad)


def test_pids_limit_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(DaemonSettings).pids_limit == 2048
    monkeypatch.setenv("NYXD_PIDS_LIMIT", "-1")
    assert load_settings(DaemonSettings).pids_limit == -1
    assert load_settings(DaemonSettings, pids_limit=100).pids_limit == 100  # the flag beats the env
    monkeypatch.setenv("NYXD_PIDS_LIMIT", "-2")
    with pytest.raises(ConfigError, match=r"pids_limit \(NYXD_PIDS_LIMIT\)"):
        load_settings(DaemonSettings)


def test_bundle_gives_containers_the_descriptor_limit_nyxd_was_started_with(
    tmp_path: Path,
) -> None:
    assert "rlimits" not in _bundle(tmp_path / "a")["process"]  # runc's own, inherited
    got = _bundle(tmp_path / "b", nofile=(1024, 524288))["process"]["rlimits"]
    assert got == [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 524288}]
