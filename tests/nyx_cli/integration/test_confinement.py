"""What a container cannot do: seccomp (docker's default profile), capabilities, pids limit.

Real runc and the busybox image of ``test_runtime.py`` (whose fixtures are reused here);
``confinement_probe.c`` (built with the host's gcc, static) makes the raw system calls
busybox has no applet for and prints one ``name=RESULT`` line per call.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import test_runtime

from nyx_cli.runtime._runc import RuncRuntime, become_subreaper

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_kernel")]

Container = test_runtime.Container
busybox = test_runtime.busybox
run_container = test_runtime.run_container
PROBE_SOURCE = Path(__file__).with_name("confinement_probe.c")
CGROUP_ROOT = Path("/sys/fs/cgroup")


@pytest.fixture
def runtime_options() -> dict[str, Any]:
    """Extra ``RuncRuntime`` arguments; a test overrides it with ``parametrize``."""
    return {}


@pytest.fixture
def runtime(tmp_path: Path, runtime_options: dict[str, Any]) -> Iterator[RuncRuntime]:
    rt = RuncRuntime(tmp_path / "runc", cgroup_parent=f"/nyxt-{os.getpid()}", **runtime_options)
    become_subreaper()
    try:
        yield rt
    finally:
        become_subreaper(False)
        for item in rt.list():
            rt.delete(item["id"], force=True)
        rt.remove_cgroup_parent()


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed (needed to build confinement_probe.c)")
    out = tmp_path_factory.mktemp("probe") / "probe"
    subprocess.run(
        [gcc, "-static", "-O2", "-o", str(out), str(PROBE_SOURCE)],
        check=True,
        capture_output=True,
    )
    return out


def _pids_cgroup(pid: int) -> Path:
    """The directory of the pids cgroup ``pid`` is in (cgroup v1 ``pids`` or v2)."""
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(","):
            return CGROUP_ROOT / "pids" / path.lstrip("/")
    for line in lines:
        if line.startswith("0::") and (CGROUP_ROOT / "cgroup.controllers").exists():
            return CGROUP_ROOT / line[3:].lstrip("/")
    pytest.skip("no pids cgroup controller")


def _results(log: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in log.splitlines() if "=" in line)


def _run_to_end(
    run_container: Callable[..., Any], runtime: RuncRuntime, command: list[str], **kw: Any
) -> tuple[int | None, str]:
    ctr = run_container(command, **kw)
    code = runtime.wait(ctr.id, ctr.pid, timeout=60)
    return code, ctr.log


def test_raw_syscalls_are_refused_as_docker_refuses_them(
    run_container: Callable[..., Any], runtime: RuncRuntime, probe: Path
) -> None:
    code, log = _run_to_end(
        run_container, runtime, ["/probe"], mounts=[(str(probe), "/probe", True)]
    )
    assert code == 0, log
    got = _results(log)
    assert got == {
        "fork": "ok",  # clone without namespace flags is what fork() is
        "clone_newuser": "EPERM",  # no user namespace, so no capability set of its own
        "clone_newnet": "EPERM",
        "clone_newns": "EPERM",
        "clone3": "ENOSYS",  # libc falls back to clone, whose flags seccomp can read
        "unshare_newuser": "EPERM",
        "io_uring_setup": "EPERM",
        "add_key": "EPERM",
        "keyctl": "EPERM",
        "bpf": "EPERM",
        "socket_alg": "EPERM",
        "socket_alg_high_bits": "EPERM",
        "socket_vsock": "EPERM",
        "socket_inet": "ok",
        "socket_netlink": "ok",
    }


def test_busybox_unshare_is_refused(
    run_container: Callable[..., Any], runtime: RuncRuntime
) -> None:
    script = "unshare -U -r true; echo user=$?; unshare -n true; echo net=$?"
    code, log = _run_to_end(run_container, runtime, ["sh", "-c", script])
    assert code == 0, log
    assert "user=0" not in log and "net=0" not in log
    assert log.count("Operation not permitted") == 2, log


def test_fork_exec_and_pipelines_still_work(
    run_container: Callable[..., Any], runtime: RuncRuntime
) -> None:
    script = (
        "echo abc | tr a-c x-z | sed s/x/X/; "
        "for i in 1 2 3; do (sleep 0 &) ; done; wait; "
        "seq 1 200 | xargs -n 20 echo | wc -l; "
        "sh -c 'exit 3'; echo child=$?"
    )
    code, log = _run_to_end(run_container, runtime, ["sh", "-c", script])
    assert code == 0, log
    assert log.split() == ["Xyz", "10", "child=3"]


def test_httpd_serves_under_the_profile(
    run_container: Callable[..., Any], runtime: RuncRuntime
) -> None:
    server = run_container(["httpd", "-f", "-p", "8080", "-h", "/www"])
    fetch = (
        "for i in $(seq 100); do wget -qO- http://127.0.0.1:8080/ && exit 0; sleep 0.1; done; "
        "exit 1"
    )
    client = run_container(["sh", "-c", fetch], ns=server.ns)
    assert runtime.wait(client.id, client.pid, timeout=60) == 0, client.log
    assert "hello from nyx" in client.log
    runtime.kill(server.id, signal.SIGKILL)
    assert runtime.wait(server.id, server.pid, timeout=60) == 137


def test_ping_uses_a_raw_socket_under_the_profile(
    run_container: Callable[..., Any], runtime: RuncRuntime
) -> None:
    code, log = _run_to_end(run_container, runtime, ["ping", "-c", "1", "-W", "5", "127.0.0.1"])
    assert code == 0, log
    assert "1 packets received" in log


@pytest.mark.parametrize("runtime_options", [{"pids_limit": 16}])
def test_fork_bomb_stops_at_the_pids_limit(
    run_container: Callable[..., Any], runtime: RuncRuntime
) -> None:
    # Start 64 sleepers; when fork fails the subshell dies, and the init replaces itself with
    # a sleep (exec, no new task) so the sleepers that did start stay counted.
    script = "(for i in $(seq 64); do sleep 300 & done) 2>&1; echo stopped; exec sleep 300"
    ctr = run_container(["sh", "-c", script])
    for _ in range(600):
        if "stopped" in ctr.log or runtime.wait(ctr.id, ctr.pid, timeout=0.05) is not None:
            break
    assert "stopped" in ctr.log, ctr.log
    cgroup = _pids_cgroup(ctr.pid)
    assert cgroup.name == ctr.id
    assert (cgroup / "pids.max").read_text().strip() == "16"
    assert int((cgroup / "pids.current").read_text()) <= 16
    events = dict(line.split() for line in (cgroup / "pids.events").read_text().splitlines())
    assert int(events["max"]) >= 1  # the kernel refused at least one fork
    assert "can't fork" in ctr.log, ctr.log
    # the host's own forks are not limited
    assert subprocess.run(["true"], check=False).returncode == 0
    runtime.kill(ctr.id, signal.SIGKILL)
    assert runtime.wait(ctr.id, ctr.pid, timeout=60) == 137
