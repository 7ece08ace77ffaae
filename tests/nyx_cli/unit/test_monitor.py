"""The per-container monitor (nyx_cli/runtime/_monitor.py) with a fake runc: a script that
leaves a background "init" behind and exits, as ``runc run -d`` does. No root needed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nyx_cli.runtime._runc import MONITOR, RuncRuntime


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


def _start(tmp_path: Path, runc: list[str]) -> subprocess.Popen[bytes]:
    """A monitor started (as nyxd's warm spare is), then given its command."""
    status = tmp_path / "status"
    status.mkdir(exist_ok=True)
    mon = subprocess.Popen(
        [sys.executable, "-S", "-I", MONITOR],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
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


def _report(mon: subprocess.Popen[bytes]) -> str:
    assert mon.stdout is not None
    line = mon.stdout.readline().decode().strip()
    mon.stdout.close()
    return line


@pytest.mark.parametrize(
    ("init", "code"), [("sleep 0.2; exit 7", 7), ("exec sh -c 'sleep 0.2; kill -9 $$'", 137)]
)
def test_records_the_exit_status_of_the_init(tmp_path: Path, init: str, code: int) -> None:
    mon = _start(tmp_path, _fake_runc(tmp_path, init))
    what, pid = _report(mon).split()
    assert what == "pid" and int(pid) == int((tmp_path / "init.pid").read_text())
    assert mon.stdin is not None
    mon.stdin.close()  # the acknowledgement
    assert mon.wait(20) == 0
    assert _exit(tmp_path) == {"pid": int(pid), "exit_code": code}
    assert "runc-output" in (tmp_path / "log").read_text()  # runc's output goes to the log


def test_reaps_nothing_before_the_acknowledgement(tmp_path: Path) -> None:
    """Until nyxd holds a pidfd of the init, the init stays a zombie: its pid is not free."""
    mon = _start(tmp_path, _fake_runc(tmp_path, "exit 3"))
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
    tmp_path: Path,
) -> None:
    """The init, re-parented to the monitor, ends while runc still runs: it stays a zombie
    until nyxd's acknowledgement too (the monitor waits for runc alone until then)."""
    mon = _start(tmp_path, _fake_runc(tmp_path, "sleep 0.1; exit 3", then=1))
    _, pid = _report(mon).split()
    with open(f"/proc/{pid}/stat") as f:
        assert f.read().split(") ")[1][0] == "Z"
    assert not (tmp_path / "status" / "exit").exists()
    assert mon.stdin is not None
    mon.stdin.close()
    assert _exit(tmp_path) == {"pid": int(pid), "exit_code": 3}
    assert mon.wait(20) == 0


def test_a_failing_runc_is_reported_and_nothing_recorded(tmp_path: Path) -> None:
    mon = _start(tmp_path, ["/bin/sh", "-c", "echo 'bad config' >&2; exit 4"])
    assert _report(mon) == "runc 4"
    assert mon.stdin is not None
    mon.stdin.close()
    assert mon.wait(20) == 4
    assert not (tmp_path / "status" / "exit").exists()
    assert "bad config" in (tmp_path / "log").read_text()


def test_a_spare_nobody_needed_exits_on_eof(tmp_path: Path) -> None:
    mon = subprocess.Popen(
        [sys.executable, "-S", "-I", MONITOR], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    out, _ = mon.communicate(b"", timeout=20)
    assert mon.returncode == 0 and out == b""


@pytest.mark.parametrize(
    "line", [b"not json\n", b"[]\n", b'{"status_dir": "/x", "pid_file": "/y", "log": "/z"}\n']
)
def test_a_bad_command_is_reported_and_nothing_run(tmp_path: Path, line: bytes) -> None:
    mon = subprocess.Popen(
        [sys.executable, "-S", "-I", MONITOR], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    out, _ = mon.communicate(line, timeout=20)
    assert mon.returncode == 2 and out.startswith(b"runc 2 ")


def test_the_runtime_keeps_one_spare_and_lets_it_go(tmp_path: Path) -> None:
    """nyxd's RuncRuntime hands out its warm spare and starts the next one behind it;
    ``close`` ends the spare (a container's monitor is never a spare)."""
    rt = RuncRuntime(tmp_path / "runc", spare_monitor=True)
    (first,) = rt._spares
    got = rt._monitor()
    assert got is first and len(rt._spares) == 1 and rt._spares[0] is not first
    (second,) = rt._spares
    rt.close()
    assert rt._spares == [] and second.returncode == 0
    mon_runc = _fake_runc(tmp_path, "exit 5")
    (tmp_path / "status").mkdir()
    assert got.stdin is not None
    command = {"status_dir": str(tmp_path / "status"), "pid_file": str(tmp_path / "init.pid")}
    got.stdin.write(
        json.dumps({**command, "log": str(tmp_path / "log"), "runc": mon_runc}).encode()
    )
    got.stdin.write(b"\n")
    got.stdin.flush()
    assert _report(got).startswith("pid ")
    got.stdin.close()
    assert got.wait(20) == 0 and _exit(tmp_path)["exit_code"] == 5
    assert RuncRuntime(tmp_path / "other")._spares == []  # none unless asked


def test_works_in_its_status_dir(tmp_path: Path) -> None:
    """How a later nyxd tells a container's monitor from a process that got its pid."""
    mon = _start(tmp_path, _fake_runc(tmp_path, "sleep 0.5"))
    _report(mon)
    assert os.readlink(f"/proc/{mon.pid}/cwd") == str(tmp_path / "status")
    assert mon.stdin is not None
    mon.stdin.close()
    mon.wait(20)


def test_outlives_the_nyxd_that_started_it(tmp_path: Path) -> None:
    """A "nyxd" starts the monitor and is killed with SIGKILL before the init ends: the exit
    status is still recorded, for the next nyxd to read."""
    nyxd = f"""
import os, subprocess, sys, time
sys.path[:0] = {sys.path!r}
from test_monitor import _fake_runc, _start, _report
from pathlib import Path
mon = _start(Path({str(tmp_path)!r}), _fake_runc(Path({str(tmp_path)!r}), "sleep 1; exit 9"))
print(_report(mon), flush=True)
time.sleep(60)
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    fake = subprocess.Popen([sys.executable, "-c", nyxd], stdout=subprocess.PIPE, env=env)
    assert fake.stdout is not None
    line = fake.stdout.readline().decode().split()
    fake.stdout.close()
    assert line[0] == "pid", line
    fake.send_signal(signal.SIGKILL)
    fake.wait(10)
    assert _exit(tmp_path) == {"pid": int(line[1]), "exit_code": 9}
