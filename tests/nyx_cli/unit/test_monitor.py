"""The per-container monitor (nyx_cli/runtime/_monitor.py) with a fake runc: a script that
leaves a background "init" behind and exits, as ``runc run -d`` does. No root needed.

Each protocol test runs twice: with a monitor forked by the fork server (what nyxd uses)
and with one exec'd as an interpreter of its own (the fallback)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nyx_cli.runtime._runc import MONITOR, RuncRuntime

New = Callable[[], Any]  # a monitor waiting for its command: pid, stdin, stdout, wait()


def _exec_monitor() -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-S", "-I", MONITOR],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip


@pytest.fixture(params=["forked", "exec"])
def new_monitor(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[New]:
    """Makes monitors: forked by a runtime's fork server, or exec'd."""
    if request.param == "exec":
        yield _exec_monitor
        return
    rt = RuncRuntime(tmp_path / "runc", fork_server=True)
    try:
        yield rt._monitor
    finally:
        rt.close()


def _wait(mon: Any, expected: int) -> None:
    """The monitor ended; an exec'd one (our child) with ``expected`` (a forked one's status
    goes to the fork server, its parent)."""
    got = mon.wait(20)
    assert got == (None if hasattr(mon, "pidfd") else expected)


def _fake_runc(tmp_path: Path, init: str, rc: int = 0, then: float = 0) -> list[str]:
    """A "runc" whose "init" (``sh -c init``) outlives it. As with runc, the init is no
    child of the process the monitor started: that one forks a child which forks the init,
    writes its pid and exits without reaping anything (so the init is re-parented to the
    monitor at once, and no shell reaps it); the "runc" waits ``then`` seconds, exits
    ``rc``."""
    pid_file = tmp_path / "init.pid"
    script = f"""
import os, sys, time
mid = os.fork()
if mid == 0:
    init = os.fork()
    if init == 0:
        os.execv("/bin/sh", ["/bin/sh", "-c", {init!r}])
    with open({str(pid_file)!r}, "w") as f:
        f.write(str(init))
    os._exit(0)
os.waitpid(mid, 0)
print("runc-output", flush=True)
time.sleep({then})
sys.exit({rc})
"""
    return [sys.executable, "-S", "-I", "-c", script]


def _start(tmp_path: Path, runc: list[str], new: New = _exec_monitor) -> Any:
    """A monitor started (``new``), then given its command."""
    status = tmp_path / "status"
    status.mkdir(parents=True, exist_ok=True)
    mon = new()
    command = {
        "status_dir": str(status),
        "pid_file": str(tmp_path / "init.pid"),
        "log": str(tmp_path / "log"),
        "runc": runc,
    }
    assert mon.stdin is not None
    mon.stdin.write(json.dumps(command).encode() + b"\n")
    mon.stdin.flush()
    return mon


def _exit(tmp_path: Path, timeout: float = 20) -> dict[str, int]:
    path = tmp_path / "status" / "exit"
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, "the monitor recorded no exit status"
        time.sleep(0.02)
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def _report(mon: Any) -> str:
    assert mon.stdout is not None
    line = mon.stdout.readline().decode().strip()
    mon.stdout.close()
    return line


@pytest.mark.parametrize(
    ("init", "code"), [("sleep 0.2; exit 7", 7), ("exec sh -c 'sleep 0.2; kill -9 $$'", 137)]
)
def test_records_the_exit_status_of_the_init(
    tmp_path: Path, init: str, code: int, new_monitor: New
) -> None:
    mon = _start(tmp_path, _fake_runc(tmp_path, init), new_monitor)
    what, pid = _report(mon).split()
    assert what == "pid" and int(pid) == int((tmp_path / "init.pid").read_text())
    assert mon.stdin is not None
    mon.stdin.close()  # the acknowledgement
    _wait(mon, 0)
    assert _exit(tmp_path) == {"pid": int(pid), "exit_code": code}
    assert "runc-output" in (tmp_path / "log").read_text()  # runc's output goes to the log


def test_reaps_nothing_before_the_acknowledgement(tmp_path: Path, new_monitor: New) -> None:
    """Until nyxd holds a pidfd of the init, the init stays a zombie: its pid is not free."""
    mon = _start(tmp_path, _fake_runc(tmp_path, "exit 3"), new_monitor)
    _, pid = _report(mon).split()
    time.sleep(0.5)
    with open(f"/proc/{pid}/stat") as f:
        assert f.read().split(") ")[1][0] == "Z"  # exited, not reaped
    assert not (tmp_path / "status" / "exit").exists()
    assert mon.stdin is not None
    mon.stdin.close()
    assert _exit(tmp_path)["exit_code"] == 3
    mon.wait(20)


def test_reaps_nothing_before_the_acknowledgement_when_the_init_ends_before_runc(
    tmp_path: Path, new_monitor: New
) -> None:
    """The init, re-parented to the monitor, ends while runc still runs: it stays a zombie
    until nyxd's acknowledgement too (the monitor waits for runc alone until then)."""
    mon = _start(tmp_path, _fake_runc(tmp_path, "sleep 0.1; exit 3", then=1), new_monitor)
    _, pid = _report(mon).split()
    with open(f"/proc/{pid}/stat") as f:
        assert f.read().split(") ")[1][0] == "Z"
    assert not (tmp_path / "status" / "exit").exists()
    assert mon.stdin is not None
    mon.stdin.close()
    assert _exit(tmp_path) == {"pid": int(pid), "exit_code": 3}
    _wait(mon, 0)


def test_a_failing_runc_is_reported_and_nothing_recorded(tmp_path: Path, new_monitor: New) -> None:
    mon = _start(tmp_path, ["/bin/sh", "-c", "echo 'bad config' >&2; exit 4"], new_monitor)
    assert _report(mon) == "runc 4"
    assert mon.stdin is not None
    mon.stdin.close()
    _wait(mon, 4)
    assert not (tmp_path / "status" / "exit").exists()
    assert "bad config" in (tmp_path / "log").read_text()


def test_a_monitor_nobody_needed_exits_on_eof(new_monitor: New) -> None:
    mon = new_monitor()
    mon.stdin.close()
    assert mon.stdout.read() == b""
    mon.stdout.close()
    _wait(mon, 0)


@pytest.mark.parametrize(
    "line",
    [
        b"not json\n",
        b"[]\n",
        b'{"status_dir": "/x", "pid_file": "/y", "log": "/z"}\n',
        b'{"status_dir": "/x", "pid_file": "/y", "log": "/z", "runc": ["/bin/true"]} []\n',
        b"\xff\n",
    ],
)
def test_a_bad_command_is_reported_and_nothing_run(line: bytes, new_monitor: New) -> None:
    mon = new_monitor()
    mon.stdin.write(line)
    mon.stdin.close()
    out = mon.stdout.read()
    mon.stdout.close()
    assert out.startswith(b"runc 2 "), out
    _wait(mon, 2)


def test_works_in_its_status_dir(tmp_path: Path, new_monitor: New) -> None:
    """How a later nyxd tells a container's monitor from a process that got its pid."""
    mon = _start(tmp_path, _fake_runc(tmp_path, "sleep 0.5"), new_monitor)
    _report(mon)
    assert os.readlink(f"/proc/{mon.pid}/cwd") == str(tmp_path / "status")
    assert mon.stdin is not None
    mon.stdin.close()
    _wait(mon, 0)


def _fds(pid: int) -> dict[int, str]:
    fds = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            fds[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
    return fds


def _until_fds(pid: int, expected: list[int]) -> dict[int, str]:
    """The descriptors of ``pid`` once they are ``expected`` (it closes some on its own)."""
    deadline = time.monotonic() + 20
    while sorted(fds := _fds(pid)) != expected:
        assert time.monotonic() < deadline, fds
        time.sleep(0.01)
    return fds


def test_a_monitor_holds_no_descriptor_of_nyxd(tmp_path: Path, new_monitor: New) -> None:
    """Its pipes on 0 and 1 (each closed when done with) and /dev/null on 2, nothing else:
    not a descriptor nyxd had (even an inheritable one), not the fork server's socket."""
    leak = os.open(tmp_path, os.O_RDONLY)
    os.set_inheritable(leak, True)
    try:
        mon = new_monitor()
    finally:
        os.close(leak)
    fds = _until_fds(mon.pid, [0, 1, 2])  # a forked one closes what it inherited first
    assert fds[0].startswith("pipe:") and fds[1].startswith("pipe:") and fds[2] == "/dev/null"
    (tmp_path / "status").mkdir()
    command = {"status_dir": str(tmp_path / "status"), "pid_file": str(tmp_path / "init.pid")}
    command |= {"log": str(tmp_path / "log"), "runc": _fake_runc(tmp_path, "sleep 0.5")}
    mon.stdin.write(json.dumps(command).encode() + b"\n")
    mon.stdin.flush()
    assert _report(mon).startswith("pid ")
    _until_fds(mon.pid, [0, 2])  # the report's pipe closed
    mon.stdin.close()
    _until_fds(mon.pid, [2])  # the acknowledgement's pipe closed
    _wait(mon, 0)


def _private_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        rows = [line.split() for line in f]
    return sum(int(r[1]) for r in rows if r[0] in ("Private_Clean:", "Private_Dirty:"))


def test_nyxds_monitors_are_no_interpreter_of_their_own(tmp_path: Path) -> None:
    """nyxd's runtime forks each monitor from one fork server: a monitor, running its
    container, has well under a Python interpreter's 4-6 MiB of private memory (~1 MiB:
    the pages it wrote since the fork)."""
    from nyx_cli.daemon._host import Host
    from nyx_cli.daemon._settings import DaemonSettings

    settings = DaemonSettings(state_dir=tmp_path / "state", run_dir=tmp_path / "run")
    rt = Host.default(settings).runtime
    try:
        mon = _start(tmp_path, _fake_runc(tmp_path, "sleep 1"), rt._monitor)
        assert _report(mon).startswith("pid ")
        private = _private_kib(mon.pid)
        mon.stdin.close()
        mon.wait(20)
    finally:
        rt.close()
    assert private < 2560, f"{private} KiB private"


def test_killing_the_fork_server_between_two_starts(tmp_path: Path) -> None:
    """A fork server that died is replaced at the next start, which succeeds; the monitor
    it had forked runs on and records its container's exit."""
    rt = RuncRuntime(tmp_path / "runc", fork_server=True)
    try:
        first = _start(tmp_path / "a", _fake_runc(tmp_path / "a", "sleep 1; exit 4"), rt._monitor)
        assert _report(first).startswith("pid ")
        first.stdin.close()
        assert rt._server is not None
        server = rt._server.proc
        server.kill()
        server.wait(20)
        second = _start(tmp_path / "b", _fake_runc(tmp_path / "b", "exit 6"), rt._monitor)
        assert rt._server is not None and rt._server.proc.pid != server.pid
        assert _report(second).startswith("pid ")
        second.stdin.close()
        assert _exit(tmp_path / "b")["exit_code"] == 6
        assert _exit(tmp_path / "a")["exit_code"] == 4
        for mon in (first, second):
            mon.wait(20)
    finally:
        rt.close()


@pytest.mark.parametrize("how", ["exec", "forked", "forked, the fork server killed too"])
def test_outlives_the_nyxd_that_started_it(tmp_path: Path, how: str) -> None:
    """A "nyxd" starts the monitor and is killed with SIGKILL before the init ends (and its
    fork server too): the exit status is still recorded, for the next nyxd to read."""
    nyxd = f"""
import os, subprocess, sys, time
sys.path[:0] = {sys.path!r}
from test_monitor import _fake_runc, _start, _report, _exec_monitor
from nyx_cli.runtime._runc import RuncRuntime
from pathlib import Path
tmp = Path({str(tmp_path)!r})
rt = RuncRuntime(tmp / "runc", fork_server=True)
new = _exec_monitor if {how!r} == "exec" else rt._monitor
mon = _start(tmp, _fake_runc(tmp, "sleep 1; exit 9"), new)
print(_report(mon), rt._server.proc.pid if rt._server else 0, flush=True)
time.sleep(60)
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    fake = subprocess.Popen([sys.executable, "-c", nyxd], stdout=subprocess.PIPE, env=env)
    assert fake.stdout is not None
    line = fake.stdout.readline().decode().split()
    fake.stdout.close()
    assert line[0] == "pid", line
    if how.endswith("too"):
        os.kill(int(line[2]), signal.SIGKILL)
    fake.send_signal(signal.SIGKILL)
    fake.wait(10)
    assert _exit(tmp_path) == {"pid": int(line[1]), "exit_code": 9}
