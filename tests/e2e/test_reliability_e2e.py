"""What nyx guarantees after a crash of nyxd, end to end (docs/reliability.md).

nyxd runs with a shared mount namespace (its mounts survive its death, as on a real host)
and is killed with SIGKILL: a container it re-adopts, or one that ended while no nyxd
watched, reports its real exit code (its monitor recorded it, nyx_cli/runtime/_monitor.py),
and a netns path that is no namespace any more (an empty file) is gone for it.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from nyxd_e2e_kit import Nyxd, assert_accounted

pytestmark = [pytest.mark.e2e, pytest.mark.kernel]

#: exits 7 on SIGUSR1 and 143 on SIGTERM
TRAPS = ["sh", "-c", 'trap "exit 7" USR1; trap "exit 143" TERM; while :; do sleep 0.1; done']


def _runc(d: Nyxd, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runc", "--root", str(d.run / "runc"), *args], capture_output=True, text=True
    )


def _until(pred: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _run(d: Nyxd, name: str, **extra: object) -> dict[str, object]:
    spec = {"image": "busybox:nyx", "name": name, "hostname": name, "command": TRAPS, **extra}
    c = d.client.create(spec)
    _until(lambda: "sleep" in _runc(d, "ps", c["id"]).stdout, f"{name}'s traps")
    return c  # type: ignore[no-any-return]


def test_an_adopted_container_reports_its_real_exit_code(
    nyxd_factory: Callable[..., Nyxd],
) -> None:
    d = nyxd_factory(shared_mounts=True)
    a = _run(d, "a")
    _run(d, "b", ports=["8090:80"])
    d.kill9()
    d.start()
    states = {c["name"]: c["state"] for c in d.client.request("GET", "/v1/containers")}
    assert states == {"a": "running", "b": "running"}  # adopted
    assert _runc(d, "kill", str(a["id"]), "USR1").returncode == 0
    assert d.client.wait("a") == {"exit_code": 7, "state": "exited"}  # not 255
    stop = d.nyx("stop", "-t", "10", "b")
    assert stop.returncode == 0, stop.stderr
    b = d.client.request("GET", "/v1/containers/b")
    assert (b["state"], b["exit_code"]) == ("stopped", 143)  # its SIGTERM trap ran
    assert_accounted(d, ["a", "b"])


def test_a_container_that_ended_while_nyxd_was_away_keeps_its_exit_code(
    nyxd_factory: Callable[..., Nyxd],
) -> None:
    d = nyxd_factory(shared_mounts=True)
    a = _run(d, "a")
    d.kill9()
    assert _runc(d, "kill", str(a["id"]), "USR1").returncode == 0
    _until(lambda: '"stopped"' in _runc(d, "state", str(a["id"])).stdout, "a's end")
    d.start()
    got = d.client.request("GET", "/v1/containers/a")
    assert (got["state"], got["exit_code"], got["error"]) == ("exited", 7, None)
    assert got["finished"] is not None
    assert_accounted(d, ["a"])


def _fork_server(d: Nyxd) -> int | None:
    """The pid of nyxd's monitor fork server (its child ``_monitor.py --server``), if any."""
    assert d.proc is not None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            ppid = int((proc / "stat").read_text().rpartition(")")[2].split()[1])
        except OSError:
            continue
        if b"_monitor.py\0--server" in cmdline and ppid == d.proc.pid:
            return int(proc.name)
    return None


def test_a_killed_monitor_fork_server_is_replaced_and_its_monitors_run_on(
    nyxd_factory: Callable[..., Nyxd],
) -> None:
    """The fork server of the containers' monitors is killed: the next run starts (a new
    server forks its monitor), the monitor the dead one forked runs on; then nyxd is killed
    too (its server goes with it): a container that ends meanwhile keeps its exit code."""
    d = nyxd_factory(shared_mounts=True)
    a = _run(d, "a")
    server = _fork_server(d)
    assert server is not None
    os.kill(server, signal.SIGKILL)
    b = _run(d, "b")
    assert _fork_server(d) not in (None, server)
    assert sorted(d.monitors().values()) == sorted([str(a["id"]), str(b["id"])])
    assert _runc(d, "kill", str(a["id"]), "USR1").returncode == 0
    assert d.client.wait("a") == {"exit_code": 7, "state": "exited"}
    d.kill9()
    assert list(d.monitors().values()) == [str(b["id"])]
    assert _runc(d, "kill", str(b["id"]), "USR1").returncode == 0
    _until(lambda: '"stopped"' in _runc(d, "state", str(b["id"])).stdout, "b's end")
    d.start()
    got = d.client.request("GET", "/v1/containers/b")
    assert (got["state"], got["exit_code"]) == ("exited", 7)  # its monitor's record, not 255
    assert_accounted(d, ["a", "b"])


def test_a_netns_path_that_is_no_namespace_any_more_is_gone(
    nyxd_factory: Callable[..., Nyxd],
) -> None:
    """After the crash, ``a``'s netns mount is gone (as after a reboot: the path stays, an
    empty file) and an empty file nothing records lies next to it: ``a`` is not adopted
    (nyxd could not manage its network) but stopped and torn down, ``b`` is adopted, and
    both files are removed."""
    d = nyxd_factory(shared_mounts=True)
    a = _run(d, "a", ports=["8091:80"])
    _run(d, "b", ports=["8092:80"])
    d.kill9()
    assert d.holder is not None
    netns = d.run / "netns" / str(a["id"])
    umount = ["nsenter", "-t", str(d.holder.pid), "--mount", "--", "umount", str(netns)]
    subprocess.run(umount, check=True)
    assert netns.is_file() and netns.stat().st_size == 0
    stray = d.run / "netns" / secrets.token_hex(32)
    stray.touch()
    d.start()
    rows = {c["name"]: c for c in d.client.request("GET", "/v1/containers", params={"all": 1})}
    assert rows["b"]["state"] == "running"
    assert rows["a"]["state"] == "exited" and rows["a"]["error"] == "stopped by nyxd at restart"
    assert rows["a"]["exit_code"] == 137  # the kill, as its monitor saw it
    assert not netns.exists() and not stray.exists()
    assert_accounted(d, ["a", "b"])
