"""runc with real containers (busybox) inside throwaway network namespaces; netns helpers.

runc runs from the test process (root mount namespace, so it sees the cgroup mounts) and
the container joins a test namespace by path: nothing runs in the root network namespace.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nyx_cli.daemon._host import Host
from nyx_cli.daemon._models import ContainerSpec
from nyx_cli.daemon._netns import create_netns, delete_netns, is_mountpoint
from nyx_cli.daemon._settings import DaemonSettings
from nyx_cli.daemon._supervisor import Supervisor
from nyx_cli.errors import RuntimeErrorNyx
from nyx_cli.images import Image, ImageStore
from nyx_cli.runtime import ProcessSpec, Rootfs, RuncRuntime, _runc, process_from_image
from nyx_cli.runtime._runc import become_subreaper
from nyx_core import (
    NetworkBackend,
    NyxSettings,
    SetupOptions,
    SetupResult,
    hookimpl,
    make_plugin_manager,
)
from nyx_core.testing import Netns

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_kernel")]

ROOT = Path(__file__).resolve().parents[3]
_ids = itertools.count()


@pytest.fixture(scope="module")
def busybox(tmp_path_factory: pytest.TempPathFactory) -> tuple[ImageStore, Image]:
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed")
    out = tmp_path_factory.mktemp("busybox")
    script = str(ROOT / "examples/busybox_image.py")
    subprocess.run([sys.executable, script, str(out / "bb.tar")], check=True, capture_output=True)
    store = ImageStore(out / "images")
    (image,) = store.load(out / "bb.tar")
    return store, image


@pytest.fixture
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RuncRuntime]:
    """nyxd's runtime: monitors forked by its fork server (``param`` False: exec'd)."""
    fork_server = getattr(request, "param", True)
    rt = RuncRuntime(
        tmp_path / "runc", cgroup_parent=f"/nyxt-{os.getpid()}", fork_server=fork_server
    )
    become_subreaper()
    try:
        yield rt
    finally:
        become_subreaper(False)
        for item in rt.list():
            rt.delete(item["id"], force=True)
        rt.close()
        rt.remove_cgroup_parent()


@dataclass
class Container:
    id: str
    dir: Path
    ns: Netns
    pid: int = 0

    @property
    def log(self) -> str:
        path = self.dir / "log"
        return path.read_text() if path.exists() else ""


@pytest.fixture
def run_container(
    busybox: tuple[ImageStore, Image],
    runtime: RuncRuntime,
    nyx_container_ns: Callable[[], Netns],
    tmp_path: Path,
) -> Iterator[Callable[..., Container]]:
    """Start busybox with a command; every container is deleted and unmounted afterwards."""
    store, image = busybox
    made: list[Container] = []

    def run(
        command: list[str],
        *,
        user: str | None = None,
        env: dict[str, str] | None = None,
        workdir: str | None = None,
        mounts: list[tuple[str, str, bool]] | None = None,
        ns: Netns | None = None,
    ) -> Container:
        n = next(_ids)
        ctr = Container(f"nyxt-{os.getpid()}-{n}", tmp_path / f"c{n}", ns or nyx_container_ns())
        made.append(ctr)
        rootfs = Rootfs.mount(store.layer_dirs(image), ctr.dir)
        process = process_from_image(image.config, None, command, env or {}, workdir, user)
        runtime.write_bundle(
            ctr.dir / "bundle",
            rootfs=rootfs,
            process=process,
            hostname=f"host{n}",
            netns_path=ctr.ns.path,
            mounts=mounts or [],
        )
        ctr.pid = runtime.start(ctr.id, ctr.dir / "bundle", ctr.dir / "log")
        return ctr

    try:
        yield run
    finally:
        for ctr in made:
            runtime.delete(ctr.id, force=True)
            Rootfs.unmount(ctr.dir)
        for ctr in made:
            assert not is_mountpoint(ctr.dir / "rootfs")


def test_echo_hello_logs_and_exits_zero(
    run_container: Callable[..., Container], runtime: RuncRuntime
) -> None:
    ctr = run_container(["echo", "hello"])
    assert ctr.pid > 0
    assert runtime.wait(ctr.id, ctr.pid, timeout=60) == 0
    assert ctr.log == "hello\n"
    state = runtime.state(ctr.id)
    assert state is not None and state["status"] == "stopped"
    runtime.delete(ctr.id)
    assert runtime.state(ctr.id) is None
    runtime.delete(ctr.id)  # idempotent


def test_namespaces_hostname_env_mounts_and_exit_code(
    run_container: Callable[..., Container], runtime: RuncRuntime, tmp_path: Path
) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("10.231.0.5 peer\n")
    script = (
        "hostname; echo FOO=$FOO $HOSTNAME; cat /etc/hosts; pwd; "
        "ip -o link | cut -d: -f2 | tr -d ' \\n'; echo; "
        "echo $$; touch /etc/hosts 2>/dev/null || echo hosts-ro; exit 7"
    )
    ctr = run_container(
        ["sh", "-c", script],
        env={"FOO": "bar"},
        workdir="/made/here",
        mounts=[(str(hosts), "/etc/hosts", True)],
    )
    assert runtime.wait(ctr.id, ctr.pid, timeout=60) == 7
    lines = ctr.log.splitlines()
    assert lines[0].startswith("host")
    assert lines[1:] == [
        f"FOO=bar {lines[0]}",
        "10.231.0.5 peer",
        "/made/here",
        "lo",
        "1",
        "hosts-ro",
    ]


def test_busybox_httpd_serves_its_page(
    run_container: Callable[..., Container], runtime: RuncRuntime
) -> None:
    server = run_container(["httpd", "-f", "-p", "8080", "-h", "/www"])
    fetch = (
        "for i in $(seq 100); do wget -qO- http://127.0.0.1:8080/ && exit 0; sleep 0.1; done; "
        "exit 1"
    )
    client = run_container(["sh", "-c", fetch], ns=server.ns)
    assert runtime.wait(client.id, client.pid, timeout=60) == 0
    assert "hello from nyx" in client.log
    runtime.kill(server.id, signal.SIGKILL)
    assert runtime.wait(server.id, server.pid, timeout=60) == 137


def test_seccomp_and_capabilities_confine_the_container(
    run_container: Callable[..., Container], runtime: RuncRuntime
) -> None:
    script = (
        "unshare -U true 2>/dev/null; echo unshare=$?; "  # user namespaces need no caps
        "mount -t tmpfs none /mnt 2>/dev/null; echo mount=$?; "
        "grep Seccomp: /proc/self/status | cut -f2; grep CapEff /proc/self/status | cut -f2"
    )
    ctr = run_container(["sh", "-c", script])
    assert runtime.wait(ctr.id, ctr.pid, timeout=60) == 0
    unshare, mount, seccomp_mode, cap_eff = ctr.log.split()
    assert unshare != "unshare=0" and mount != "mount=0"
    assert seccomp_mode == "2"  # a filter is installed
    assert int(cap_eff, 16) & (1 << 21) == 0  # no CAP_SYS_ADMIN
    assert int(cap_eff, 16) & (1 << 10)  # CAP_NET_BIND_SERVICE (httpd on port 80)


def test_user_resolution_in_the_container(
    run_container: Callable[..., Container], runtime: RuncRuntime
) -> None:
    ctr = run_container(["sh", "-c", "id -u; id -g; echo $HOME"], user="www-data")
    assert runtime.wait(ctr.id, ctr.pid, timeout=60) == 0
    assert ctr.log.split() == ["33", "33", "/var/www"]


def test_long_running_container_kill_state_delete(
    run_container: Callable[..., Container], runtime: RuncRuntime
) -> None:
    ctr = run_container(["sleep", "300"])
    state = runtime.state(ctr.id)
    assert state is not None and state["status"] == "running" and state["pid"] == ctr.pid
    assert any(item["id"] == ctr.id for item in runtime.list())
    assert runtime.wait(ctr.id, ctr.pid, timeout=0.2) is None  # still sleeping
    runtime.kill(ctr.id, signal.SIGKILL)
    assert runtime.wait(ctr.id, ctr.pid, timeout=60) == 128 + signal.SIGKILL
    assert runtime.wait(ctr.id, ctr.pid) == 137  # remembered
    runtime.kill(ctr.id, signal.SIGKILL)  # already gone: no error
    runtime.delete(ctr.id)
    assert runtime.state(ctr.id) is None
    assert all(item["id"] != ctr.id for item in runtime.list())


def test_list_reads_runc_states_as_runc_list_does(
    run_container: Callable[..., Container],
    runtime: RuncRuntime,
    busybox: tuple[ImageStore, Image],
    nyx_container_ns: Callable[[], Netns],
    tmp_path: Path,
) -> None:
    """``list`` reads runc's state files instead of exec'ing ``runc list`` (a restart of nyxd
    with a thousand containers); it says what runc says: running, stopped (pid 0) and
    created but not started; a state file it cannot read makes it ask runc."""

    def runc_says() -> list[dict[str, Any]]:
        return [{k: i[k] for k in ("id", "pid", "status")} for i in runtime._runc_list()]

    running = run_container(["sleep", "300"])
    ended = run_container(["sleep", "300"])
    runtime.kill(ended.id, signal.SIGKILL)
    assert runtime.wait(ended.id, ended.pid, timeout=60) == 137
    store, image = busybox
    created = f"nyxt-{os.getpid()}-created"
    cdir = tmp_path / "created"
    rootfs = Rootfs.mount(store.layer_dirs(image), cdir)
    try:
        process = process_from_image(image.config, None, ["sleep", "300"], {}, None, None)
        runtime.write_bundle(
            cdir / "bundle",
            rootfs=rootfs,
            process=process,
            hostname="created",
            netns_path=nyx_container_ns().path,
            mounts=[],
            container_id=created,
        )
        bundle = str(cdir / "bundle")
        with (cdir / "log").open("wb") as log:  # the init keeps its stdio: no pipes
            subprocess.run(
                ["runc", "--root", str(runtime.root), "create", "--bundle", bundle, created],
                check=True,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                timeout=60,
            )
        got = runtime.list()
        by_id = {i["id"]: i for i in got}
        assert by_id[running.id] == {"id": running.id, "pid": running.pid, "status": "running"}
        assert by_id[ended.id] == {"id": ended.id, "pid": 0, "status": "stopped"}
        assert by_id[created]["status"] == "created"
        assert got == runc_says()
        (runtime.root / "odd").mkdir()
        (runtime.root / "odd" / "state.json").write_text('{"another": "format"}')
        fallback = [{k: i[k] for k in ("id", "pid", "status")} for i in runtime.list()]
        assert fallback == runc_says()  # asked runc (which skips what it cannot load)
    finally:
        runtime.delete(created, force=True)
        Rootfs.unmount(cdir)


def test_pidfd_is_a_new_descriptor_of_the_init(
    run_container: Callable[..., Container], runtime: RuncRuntime
) -> None:
    """What nyxd's exit watcher waits on: a dup of the pidfd taken at start; readable once the
    init has ended; None for a container that is gone."""
    ctr = run_container(["sleep", "300"])
    fd = runtime.pidfd(ctr.id, ctr.pid)
    assert fd is not None
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        assert poller.poll(100) == []
        runtime.kill(ctr.id, signal.SIGKILL)
        assert poller.poll(30_000) != []
    finally:
        os.close(fd)
    assert runtime.wait(ctr.id, ctr.pid, timeout=60) == 137  # its own descriptor still works
    runtime.delete(ctr.id)
    assert runtime.pidfd(ctr.id, ctr.pid) is None


def test_sigterm_reaches_a_trapping_init(
    run_container: Callable[..., Container], runtime: RuncRuntime
) -> None:
    ctr = run_container(
        ["sh", "-c", "trap 'echo bye; exit 0' TERM; echo up; while :; do sleep 1; done"]
    )
    for _ in range(200):
        if "up" in ctr.log:
            break
        runtime.wait(ctr.id, ctr.pid, timeout=0.05)
    runtime.kill(ctr.id, signal.SIGTERM)
    assert runtime.wait(ctr.id, ctr.pid, timeout=60) == 0
    assert ctr.log.split() == ["up", "bye"]


def test_duplicate_id_fails_and_leaves_the_running_one(
    run_container: Callable[..., Container], runtime: RuncRuntime, tmp_path: Path
) -> None:
    ctr = run_container(["sleep", "300"])
    with pytest.raises(RuntimeErrorNyx, match="exists"):
        runtime.start(ctr.id, ctr.dir / "bundle", tmp_path / "other.log")
    state = runtime.state(ctr.id)
    assert state is not None and state["status"] == "running"


def test_force_delete_of_a_running_container(
    run_container: Callable[..., Container], runtime: RuncRuntime
) -> None:
    ctr = run_container(["sleep", "300"])
    with pytest.raises(RuntimeErrorNyx, match=ctr.id):
        runtime.delete(ctr.id)
    runtime.delete(ctr.id, force=True)
    assert runtime.state(ctr.id) is None
    assert runtime.wait(ctr.id, ctr.pid, timeout=60) == 137


def _monitor_pid(runtime: RuncRuntime, ctr: Container) -> int:
    return int((runtime.status_dir(ctr.id) / "monitor").read_text())


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rpartition(")")[2].split()[1])


def test_monitors_are_forked_by_one_fork_server_and_hold_only_dev_null(
    run_container: Callable[..., Container], runtime: RuncRuntime
) -> None:
    """Each monitor: a child of the one fork server, in a session of its own, working in its
    status dir, holding no descriptor but /dev/null on 2 once its pipes are done with."""
    ctrs = [run_container(["sleep", "300"]) for _ in range(2)]
    assert runtime._server is not None
    server = runtime._server.proc.pid
    for ctr in ctrs:
        mpid = _monitor_pid(runtime, ctr)
        assert _ppid(mpid) == server and os.getsid(mpid) == mpid
        assert os.readlink(f"/proc/{mpid}/cwd") == str(runtime.status_dir(ctr.id))
        for _ in range(500):  # fd 0 is closed once the monitor read the acknowledgement
            fds = {
                fd: os.readlink(f"/proc/{mpid}/fd/{fd}") for fd in os.listdir(f"/proc/{mpid}/fd")
            }
            if len(fds) == 1:
                break
            runtime.wait(ctr.id, ctr.pid, timeout=0.01)
        assert fds == {"2": "/dev/null"}
    assert sorted(os.listdir(f"/proc/{server}/fd")) == ["0", "1", "2", "3", "4"]  # + wakeup pipe
    assert os.readlink(f"/proc/{server}/fd/0").startswith("socket:")


def test_killing_the_fork_server_between_two_starts_does_not_break_the_next(
    run_container: Callable[..., Container], runtime: RuncRuntime
) -> None:
    first = run_container(["sleep", "300"])
    server = runtime._server
    assert server is not None
    server.proc.kill()
    server.proc.wait(30)
    second = run_container(["sh", "-c", "exit 3"])  # a new fork server forks its monitor
    assert runtime._server is not None and runtime._server.proc.pid != server.proc.pid
    assert runtime.wait(second.id, second.pid, timeout=60) == 3
    assert runtime.exit_status(second.id, second.pid) is not None
    runtime.kill(first.id, signal.SIGKILL)  # its monitor outlived the server that forked it
    assert runtime.wait(first.id, first.pid, timeout=60) == 137
    got = runtime.exit_status(first.id, first.pid)
    assert got is not None and got[0] == 137  # recorded by the monitor (not reaped by us)


def test_the_exit_code_is_recorded_with_the_fork_server_and_the_runtime_gone(
    run_container: Callable[..., Container], runtime: RuncRuntime
) -> None:
    """The fork server is killed and a new runtime (the next nyxd's) waits: the container's
    real exit code, as its monitor recorded it."""
    ctr = run_container(["sh", "-c", "sleep 1; exit 7"])
    assert runtime._server is not None
    runtime._server.proc.kill()
    later = RuncRuntime(runtime.root, cgroup_parent=runtime.cgroup_parent)
    assert later.wait(ctr.id, ctr.pid, timeout=60) == 7
    got = later.exit_status(ctr.id, ctr.pid)
    assert got is not None and got[0] == 7


def test_a_monitor_forked_just_before_its_server_died_is_reaped(
    runtime: RuncRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server forks a monitor and dies before nyxd reads its answer: the monitor, now
    nyxd's child (the subreaper above it) that nyxd never heard of, exits on the closed
    command pipe and is reaped, not left a zombie until nyxd exits."""
    first = runtime._monitor()  # the server exists
    assert isinstance(first, _runc._ForkedMonitor) and runtime._server is not None
    server = runtime._server
    orphan: list[int] = []

    def dies_after_forking() -> Any:
        cmd_r, cmd_w = os.pipe()
        report_r, report_w = os.pipe()
        socket.send_fds(server.sock, [b"fork"], [cmd_r, report_w])
        os.close(cmd_r)
        os.close(report_w)
        msg, fds, _, _ = socket.recv_fds(server.sock, 256, 1)  # forked: what nyxd never sees
        orphan.append(int(msg))
        for fd in fds:
            os.close(fd)
        server.proc.kill()
        server.proc.wait(30)
        os.close(cmd_w)  # what nyxd's failed fork() closes
        os.close(report_r)
        raise OSError("monitor fork server: gone")

    monkeypatch.setattr(server, "fork", dies_after_forking)
    second = runtime._monitor()  # from the next server
    (pid,) = orphan
    try:
        for _ in range(200):
            if not os.path.exists(f"/proc/{pid}"):
                break
            select.select([], [], [], 0.05)
        assert not os.path.exists(f"/proc/{pid}"), f"monitor {pid} left: {_state(pid)}"
    finally:
        for mon in (first, second):
            assert mon.stdin is not None and mon.stdout is not None
            mon.stdin.close()  # no command: it exits
            mon.stdout.close()
            mon.wait(30)


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]
    except OSError:
        return "gone"


def test_only_exited_monitors_named_so_are_reaped() -> None:
    """The sweep reaps zombies named nyx-monitor and nothing else: a zombie child of
    another name is left to whoever waits for it (a ``Popen``)."""
    other = subprocess.Popen(["sh", "-c", "exit 4"])
    for _ in range(200):
        if _state(other.pid) == "Z":
            break
        select.select([], [], [], 0.01)
    assert _runc.reap_orphaned_monitors() == []
    assert other.wait(10) == 4


@pytest.mark.parametrize("runtime", [False], indirect=True)
def test_without_a_fork_server_each_monitor_is_an_interpreter_of_its_own(
    run_container: Callable[..., Container], runtime: RuncRuntime
) -> None:
    ctr = run_container(["sh", "-c", "sleep 0.5; exit 5"])
    assert runtime._server is None and _ppid(_monitor_pid(runtime, ctr)) == os.getpid()
    assert runtime.wait(ctr.id, ctr.pid, timeout=60) == 5
    got = runtime.exit_status(ctr.id, ctr.pid)
    assert got is not None and got[0] == 5


def test_unknown_container_is_no_error(runtime: RuncRuntime) -> None:
    name = f"nyxt-{os.getpid()}-missing"
    assert runtime.state(name) is None
    runtime.kill(name)
    runtime.delete(name)
    runtime.delete(name, force=True)
    assert runtime.list() == []


def test_missing_executable_fails_cleanly(
    run_container: Callable[..., Container], runtime: RuncRuntime
) -> None:
    with pytest.raises(RuntimeErrorNyx, match="no-such-binary"):
        run_container(["no-such-binary"])
    assert runtime.list() == []


def test_process_spec_in_bundle(
    busybox: tuple[ImageStore, Image], runtime: RuncRuntime, tmp_path: Path
) -> None:
    import json

    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    spec = ProcessSpec(args=["true"], env=["A=1"], cwd="/w")
    runtime.write_bundle(
        tmp_path / "b",
        rootfs=rootfs,
        process=spec,
        hostname="h",
        netns_path="/run/netns/x",
        mounts=[("/src", "/dst", False)],
        container_id="abc",
    )
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config["process"]["args"] == ["true"]
    assert config["process"]["env"] == ["A=1", "HOSTNAME=h", "HOME=/root"]
    assert config["process"]["user"] == {"uid": 0, "gid": 0, "additionalGids": []}
    assert {"type": "network", "path": "/run/netns/x"} in config["linux"]["namespaces"]
    assert config["linux"]["cgroupsPath"] == f"/nyxt-{os.getpid()}/abc"
    assert "CAP_SYS_ADMIN" not in config["process"]["capabilities"]["bounding"]
    assert config["mounts"][-1] == {
        "destination": "/dst",
        "type": "bind",
        "source": "/src",
        "options": ["rbind", "rprivate"],
    }
    assert (rootfs / "w").is_dir()


# -- netns ---------------------------------------------------------------------------------


def _ns_inode(path: str) -> int:
    return os.stat(path).st_ino


def test_create_and_delete_netns_leave_nothing(tmp_path: Path) -> None:
    path = tmp_path / "netns" / f"nyxt-{os.getpid()}"
    ours = _ns_inode("/proc/thread-self/ns/net")
    try:
        create_netns(path)
        assert is_mountpoint(path)
        assert _ns_inode(str(path)) != ours
        assert _ns_inode("/proc/thread-self/ns/net") == ours
        links = subprocess.run(
            ["nsenter", f"--net={path}", "ip", "-o", "link"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"]
        assert "UP" not in links.split("<")[1].split(">")[0].split(",")  # lo left down
        with pytest.raises(RuntimeErrorNyx, match="already exists"):
            create_netns(path)
    finally:
        delete_netns(path)
    assert not path.exists()
    assert not is_mountpoint(path)
    delete_netns(path)  # idempotent


IS_MOUNTPOINT_PROBE = """
import os, sys
from pathlib import Path
from nyx_cli.daemon._netns import MS_BIND, _by_mount_ids, _in_mountinfo, is_mountpoint
from nyx_cli.daemon._netns import mount, umount

base = Path(sys.argv[1])
for d in ("src", "dst", "tmpfs", "plain"):
    (base / d).mkdir()
for f in ("file", "over"):
    (base / f).write_text("")
mount(base / "src", base / "dst", None, MS_BIND)  # a bind mount of the same filesystem
mount(base / "file", base / "over", None, MS_BIND)  # a file bind-mounted on a file
mount("tmpfs", base / "tmpfs", "tmpfs")
os.symlink(base / "dst", base / "link")
paths = ["dst", "over", "tmpfs", "src", "file", "plain", "missing", "link", "dst/."]
got = {p: is_mountpoint(base / p) for p in paths}
got["/"] = is_mountpoint("/")
same = all(got[p] == _in_mountinfo(os.path.realpath(base / p)) for p in paths)
same = same and all(got[p] == _by_mount_ids(base / p) for p in paths)  # without statx
umount(base / "dst")
print(got, same, is_mountpoint(base / "dst"))
"""


def test_is_mountpoint_sees_bind_mounts_and_agrees_with_mountinfo(tmp_path: Path) -> None:
    """Mount ids, not device numbers: a bind mount of the same filesystem is a mount point
    too, a lazily unmounted one no longer (in a mount namespace of the test's own)."""
    probe = [sys.executable, "-c", IS_MOUNTPOINT_PROBE, str(tmp_path)]
    out = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", *probe],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    expected = {
        "dst": True,
        "over": True,
        "tmpfs": True,
        "src": False,
        "file": False,
        "plain": False,
        "missing": False,
        "link": True,
        "dst/.": True,
        "/": True,
    }
    assert out == f"{expected} True False"


def test_container_joins_a_netns_made_by_create_netns(
    busybox: tuple[ImageStore, Image], runtime: RuncRuntime, tmp_path: Path
) -> None:
    store, image = busybox
    ns = tmp_path / "netns" / "c"
    cid = f"nyxt-{os.getpid()}-own-ns"
    try:
        create_netns(ns)
        rootfs = Rootfs.mount(store.layer_dirs(image), tmp_path / "c")
        process = process_from_image(image.config, None, ["ip", "-o", "link"], {}, None, None)
        runtime.write_bundle(
            tmp_path / "c" / "bundle",
            rootfs=rootfs,
            process=process,
            hostname="c",
            netns_path=str(ns),
            mounts=[],
        )
        pid = runtime.start(cid, tmp_path / "c" / "bundle", tmp_path / "c" / "log")
        assert runtime.wait(cid, pid, timeout=60) == 0
        assert "lo:" in (tmp_path / "c" / "log").read_text()
    finally:
        runtime.delete(cid, force=True)
        Rootfs.unmount(tmp_path / "c")
        delete_netns(ns)
    assert not is_mountpoint(ns) and not ns.exists()


# -- what other users of the host can read ---------------------------------------------------

NOBODY_PROBE = """
import os, sys
for path in sys.argv[1:]:
    try:
        os.stat(path)
        if os.path.isdir(path):
            os.listdir(path)
        else:
            open(path, "rb").close()
        print("reachable")
    except Exception as exc:
        print(type(exc).__name__)
"""


def as_nobody(*paths: Path) -> list[str]:
    """What uid/gid 65534 (no supplementary groups) gets for each path: ``reachable`` or
    the exception's name (stat, then open or list)."""
    proc = subprocess.run(
        ["/usr/bin/python3", "-c", NOBODY_PROBE, *map(str, paths)],
        user=65534,
        group=65534,
        extra_groups=[],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    )
    return proc.stdout.split()


class _NoNetwork:
    """A network backend that only hands out DNS facts: the container keeps ``lo``."""

    @hookimpl
    def nyx_backend_ensure_network(self, settings: NyxSettings, options: Any) -> Any:
        return True

    @hookimpl
    def nyx_backend_setup(
        self, container_id: str, netns_path: str, ports: Any, opts: SetupOptions
    ) -> Any:
        return SetupResult(
            container_id=container_id,
            network=opts.network,
            dns_server=ipaddress.ip_address("10.231.0.1"),
            dns_search=["nyxd.local"],
        )

    @hookimpl
    def nyx_backend_teardown(self, container_id: str, netns_path: str) -> Any:
        return True


def test_container_secrets_are_private_and_etc_files_readable_by_a_nonroot_user(
    busybox: tuple[ImageStore, Image], runtime: RuncRuntime
) -> None:
    store, _ = busybox
    top = Path(tempfile.mkdtemp(prefix="nyxt-open-"))
    top.chmod(0o755)  # every user can traverse it, as /var/lib and /run
    settings = DaemonSettings(
        state_dir=top / "state",
        run_dir=top / "run",
        socket=top / "run" / "nyxd.sock",
        container_subnet="10.231.0.0/24",
        gateway_ip="10.231.0.1",
        dns="off",
    )
    pm = make_plugin_manager()
    pm.register(_NoNetwork())
    host = Host(
        images=store,
        rootfs=Rootfs(),
        runtime=runtime,
        process_from_image=process_from_image,
        create_netns=create_netns,
        delete_netns=delete_netns,
        netns_alive=is_mountpoint,
    )
    sup = Supervisor(settings, NetworkBackend(pm, "none"), None, host, stop_grace=1)
    script = "id -u; cat /etc/hostname /etc/hosts /etc/resolv.conf; echo done; sleep 300"
    try:
        c = sup.create(
            ContainerSpec(
                image="busybox:nyx",
                name="private",
                user="nobody",
                env={"API_TOKEN": "s3cret"},
                command=["sh", "-c", script],
                dns=True,
            )
        )
        log = top / "state" / "containers" / c["id"] / "container.log"
        for _ in range(600):
            if b"done" in log.read_bytes():
                break
            runtime.wait(c["id"], c["pid"], timeout=0.1)
        lines = log.read_text().splitlines()
        assert lines[0] == "65534"  # not root: the files below are read as nobody
        assert "private" in lines[1]
        assert "127.0.0.1\tlocalhost" in lines  # /etc/hosts
        assert "nameserver 10.231.0.1" in lines
        record = top / "state" / "containers" / c["id"] / "container.json"
        assert "s3cret" in record.read_text()
        cdir = top / "run" / "containers" / c["id"]
        bundle = cdir / "bundle" / "config.json"
        assert "s3cret" in bundle.read_text()
        private = [record, log, bundle, cdir / "rootfs" / "bin" / "busybox", cdir / "upper"]
        assert as_nobody(*private) == ["PermissionError"] * len(private)
        for f in (record, log, bundle):
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        for f in ("hosts", "hostname", "resolv.conf"):  # bind-mounted: must stay readable
            assert stat.S_IMODE((cdir / f).stat().st_mode) == 0o644, f
    finally:
        sup.shutdown(grace=1)
        shutil.rmtree(top, ignore_errors=True)


def test_workdir_is_created_inside_the_rootfs_only(runtime: RuncRuntime, tmp_path: Path) -> None:
    rootfs, host = tmp_path / "rootfs", tmp_path / "host"
    (rootfs / "etc").mkdir(parents=True)
    host.mkdir()
    (rootfs / "link").symlink_to(host)  # absolute: means rootfs/<host path>
    (rootfs / "up").symlink_to("../../../../../../..")
    for cwd, made in [("/link/w", f"{host}/w"), ("/up/x/../y", "y")]:
        spec = ProcessSpec(args=["true"], cwd=cwd)
        runtime.write_bundle(
            tmp_path / "b", rootfs=rootfs, process=spec, hostname="h", netns_path=None, mounts=[]
        )
        assert (rootfs / made.lstrip("/")).is_dir()
    assert list(host.iterdir()) == []
    assert stat.S_IMODE((tmp_path / "b").stat().st_mode) == 0o700


def test_exec_runs_in_the_container_as_its_process_and_a_timeout_kills_it(
    run_container: Callable[..., Container], runtime: RuncRuntime
) -> None:
    """The healthcheck probe: ``runc exec`` in the container with its env, cwd and user;
    output cut at the limit; after the timeout the probe is killed, not left running."""
    ctr = run_container(["sleep", "300"], user="www-data", env={"PROBE": "yes"}, workdir="/srv")
    code, out = runtime.exec(ctr.id, ["sh", "-c", "echo $PROBE $(pwd) $(id -u) $(hostname)"], 30)
    assert (code, out.split()) == (0, ["yes", "/srv", "33", f"host{ctr.id.rsplit('-', 1)[1]}"])
    code, out = runtime.exec(ctr.id, ["sh", "-c", "echo nope >&2; exit 3"], 30)
    assert (code, out) == (3, "nope\n")
    code, out = runtime.exec(ctr.id, ["sh", "-c", "yes | head -c 100000"], 30, limit=10)
    assert (code, out) == (0, "y\ny\ny\ny\ny\n")
    code, out = runtime.exec(ctr.id, ["nosuchprogram"], 30)
    assert code not in (0, None)
    code, out = runtime.exec(ctr.id, ["sh", "-c", "echo started; exec sleep 1000"], 0.5)
    assert code is None and out == "started\n"
    ps = runtime.exec(ctr.id, ["ps", "-o", "args"], 30)[1]
    assert "sleep 1000" not in ps and "sleep 300" in ps  # the probe was killed, init was not
    assert runtime.state(ctr.id)["status"] == "running"  # type: ignore[index]
