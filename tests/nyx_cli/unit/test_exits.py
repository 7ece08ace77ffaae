"""The exit watcher: one thread notices the end of many processes (pidfds in an epoll)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from nyx_cli.daemon._exits import ExitWatcher
from nyx_cli.daemon._host import Host
from nyx_cli.daemon._settings import DaemonSettings


def test_one_thread_watches_many_processes_and_each_end_runs_its_callback() -> None:
    watcher = ExitWatcher()
    gate_r, gate_w = os.pipe()
    # children that end when the gate closes (they wait for EOF on it)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", "import os, sys; os.read(int(sys.argv[1]), 1)", str(gate_r)],
            pass_fds=[gate_r],
        )
        for _ in range(20)
    ]
    os.close(gate_r)
    ended: dict[int, threading.Event] = {p.pid: threading.Event() for p in procs}
    names: dict[int, str] = {}
    before = threading.active_count()
    try:
        for p in procs:

            def on_exit(pid: int = p.pid) -> None:
                names[pid] = threading.current_thread().name
                ended[pid].set()

            watcher.watch(p.pid, f"exit-{p.pid}", on_exit)
        assert watcher.watched() == 20
        assert threading.active_count() == before + 1  # the watcher, not one per process
        assert not any(e.is_set() for e in ended.values())
    finally:
        os.close(gate_w)
    for p in procs:
        p.wait(30)  # the watcher never reaps: the parent does
        assert ended[p.pid].wait(30)
        assert names[p.pid] == f"exit-{p.pid}"
    assert watcher.watched() == 0


def test_a_pidfd_given_is_watched_and_closed() -> None:
    """The runtime's own pidfd (a dup: taken before anything could reap the init) is what
    the watcher waits on when it gets one; it closes it after the end."""
    gate_r, gate_w = os.pipe()
    p = subprocess.Popen(
        [sys.executable, "-c", "import os, sys; os.read(int(sys.argv[1]), 1)", str(gate_r)],
        pass_fds=[gate_r],
    )
    os.close(gate_r)
    fd = os.pidfd_open(p.pid)
    watcher = ExitWatcher()
    done = threading.Event()
    watcher.watch(p.pid, "given", done.set, fd)
    assert watcher.watched() == 1 and not done.is_set()
    os.close(gate_w)
    p.wait(30)
    assert done.wait(30)
    assert watcher.watched() == 0
    with pytest.raises(OSError):
        os.fstat(fd)  # closed by the watcher (nothing else opened since in this thread)


def test_a_process_that_is_gone_runs_its_callback_at_once() -> None:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait(30)
    done = threading.Event()
    ExitWatcher().watch(p.pid, "gone", done.set)
    assert done.wait(30)


def test_nyxd_hosts_watch_exits_from_one_watcher(tmp_path: Path) -> None:
    """nyxd's host wires the watcher; a host built without one (the unit tests' fakes) has a
    thread per container wait instead."""
    settings = DaemonSettings(state_dir=tmp_path / "state", run_dir=tmp_path / "run")
    host = Host.default(settings)
    try:
        assert isinstance(getattr(host.watch_exit, "__self__", None), ExitWatcher)
    finally:
        close = getattr(host.runtime, "close", None)  # its monitors' fork server, if started
        if callable(close):
            close()
    assert Host.__dataclass_fields__["watch_exit"].default is None
