"""Restart policies and healthchecks with a real nyxd and runc (issue 14).

A container with ``--restart always`` whose process dies is brought back by nyxd (its port
answers again, the count grows), and again after nyxd is killed and started again, and after
a clean nyxd restart; ``unless-stopped`` stopped by hand stays stopped. Healthchecks run in
the container (the image's ``HEALTHCHECK`` and ``--health-cmd``), and a compose service that
``depends_on`` another with ``condition: service_healthy`` starts only once it is healthy.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from nyxd_e2e_kit import ROOT, Nyxd
from test_nyxd_e2e import HTTPD, PAGE, assert_clean, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.kernel]


def _get(d: Nyxd, ref: str) -> dict[str, Any]:
    got: dict[str, Any] = d.client.request("GET", f"/v1/containers/{ref}")
    return got


def _answers(d: Nyxd, port: int) -> bool:
    return PAGE in d.host("curl", "-s", "-m", "2", f"http://127.0.0.1:{port}/").stdout


def _crash(d: Nyxd, ref: str) -> int:
    """Kill the container's process behind nyxd's back (not a stop): returns the old pid."""
    pid = _get(d, ref)["pid"]
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGKILL)
    return pid


def _back(d: Nyxd, ref: str, old_pid: int, count: int) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        c = _get(d, ref)
        ok = c["state"] == "running" and c["pid"] != old_pid and c["restart_count"] == count
        return c if ok else None

    got: dict[str, Any] = wait_for(check, timeout=30, what=f"{ref} restarted ({count})")
    return got


def test_restart_always_brings_a_crashed_container_back_and_after_nyxd_restarts(
    nyxd: Nyxd,
) -> None:
    d = nyxd
    runs = [
        ("web", "always", "8090"),
        ("keep", "unless-stopped", "8091"),
        ("held", "unless-stopped", "8092"),
        ("plain", "no", "8093"),
    ]
    for name, policy, port in runs:
        r = d.nyx(
            "run", "-d", "--name", name, "--restart", policy, "-p", f"{port}:80",
            "busybox:nyx", *HTTPD,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
    assert wait_for(lambda: _answers(d, 8090), what="8090")
    # its process dies: nyxd starts it again after the backoff, network and port included
    first = _get(d, "web")
    old = _crash(d, "web")
    again = _back(d, "web", old, 1)
    assert again["ips"] and again["ports"] == ["8090:80/tcp"]
    assert wait_for(lambda: _answers(d, 8090), what="8090 after the crash")
    assert first["ips"] != [] and len(d.veths()) == 4
    ps = d.nyx("ps").stdout
    web_row = next(line for line in ps.splitlines() if " web " in line)
    assert " Up " in web_row and " 1 " in web_row, ps
    # a crash of a container without a policy stays down
    _crash(d, "plain")
    wait_for(lambda: _get(d, "plain")["state"] == "exited", what="plain exited")
    # stopped by hand: never restarted, and unless-stopped stays stopped with nyxd
    assert d.nyx("stop", "-t", "1", "held").returncode == 0
    assert _get(d, "held")["state"] == "stopped"
    # nyxd killed: the restarted nyxd stops what is left (its mounts went with it) and
    # starts again what its policy says, with every step afresh
    web_pid, keep_pid = _get(d, "web")["pid"], _get(d, "keep")["pid"]
    d.kill9()
    d.start()
    states = {c["name"]: c for c in d.client.request("GET", "/v1/containers", params={"all": 1})}
    assert {n: c["state"] for n, c in states.items()} == {
        "web": "running",
        "keep": "running",
        "held": "stopped",
        "plain": "exited",
    }
    assert states["web"]["pid"] != web_pid and states["keep"]["pid"] != keep_pid
    assert states["web"]["restart_count"] == 1  # nyxd's own start of it is not a restart
    assert wait_for(lambda: _answers(d, 8090), what="8090 after nyxd was killed")
    assert wait_for(lambda: _answers(d, 8091), what="8091 after nyxd was killed")
    # and crashes are still handled by the new nyxd
    old = _crash(d, "web")
    _back(d, "web", old, 2)
    assert wait_for(lambda: _answers(d, 8090), what="8090 after the second crash")
    # a clean stop of nyxd is no stop by hand: both come back with it
    assert d.stop() == 0
    assert d.runc_list() == []
    d.start()
    states = {c["name"]: c["state"] for c in d.client.request("GET", "/v1/containers")}
    assert states == {"web": "running", "keep": "running"}
    assert wait_for(lambda: _answers(d, 8091), what="8091 after nyxd's restart")
    # stopped and removed by hand: nothing comes back, nothing is left
    assert d.nyx("rm", "-f", "web", "keep", "held", "plain").returncode == 0
    assert d.nyx("ps", "-a", "-q").stdout == ""
    assert_clean(d)


def _health_image(tmp_path: Path) -> Path:
    """busybox:health: the busybox image with a HEALTHCHECK (every 300 ms, ready once
    /tmp/ready exists) and httpd as its command."""
    spec = importlib.util.spec_from_file_location(
        "busybox_image", ROOT / "examples/busybox_image.py"
    )
    assert spec is not None and spec.loader is not None
    bb = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("busybox_image", bb)
    spec.loader.exec_module(bb)
    layer = bb.layer_tar(bb.busybox_entries())
    ms = 1_000_000
    config = bb.image_config(
        [f"sha256:{bb._sha(layer)}"],
        cmd=["httpd", "-f", "-p", "80", "-h", "/www"],
        extra={
            "Healthcheck": {
                "Test": ["CMD-SHELL", "test -e /tmp/ready || { echo not yet; exit 1; }"],
                "Interval": 300 * ms,
                "Timeout": 5000 * ms,
                "Retries": 2,
            }
        },
    )
    out = tmp_path / "health.tar"
    bb.write_docker_archive(out, [layer], config, ["busybox:health"])
    return out


def test_healthchecks_run_in_the_container(nyxd: Nyxd, tmp_path: Path) -> None:
    d = nyxd
    d.client.load(_health_image(tmp_path))
    assert d.nyx("run", "-d", "--name", "svc", "busybox:health").returncode == 0

    def health(ref: str) -> dict[str, Any]:
        got: dict[str, Any] = _get(d, ref)["health"]
        return got

    assert health("svc")["status"] in ("starting", "unhealthy")
    wait_for(lambda: health("svc")["status"] == "unhealthy", what="unhealthy after 2 failures")
    assert health("svc")["log"][-1]["output"] == "not yet\n"
    assert "(unhealthy)" in d.nyx("ps").stdout
    # the probe runs inside the container: a file made there turns it healthy
    r = d.host("runc", "--root", str(d.run / "runc"), "exec", _get(d, "svc")["id"], "touch",
               "/tmp/ready")  # fmt: skip
    assert r.returncode == 0, r.stderr
    wait_for(lambda: health("svc")["status"] == "healthy", what="healthy")
    assert health("svc")["failing_streak"] == 0
    assert "Up " in d.nyx("ps").stdout and "(healthy)" in d.nyx("ps").stdout
    inspect = d.nyx("inspect", "svc").stdout
    assert '"restart_count": 0' in inspect and '"status": "healthy"' in inspect
    # --health-cmd replaces the image's test, --no-healthcheck turns it off
    r = d.nyx(
        "run", "-d", "--name", "own", "--health-cmd", "exit 0", "--health-interval", "200ms",
        "busybox:health",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    wait_for(lambda: health("own")["status"] == "healthy", what="own check healthy")
    assert d.nyx("run", "-d", "--name", "off", "--no-healthcheck", "busybox:health").returncode == 0
    assert health("off") is None
    assert d.nyx("rm", "-f", "svc", "own", "off").returncode == 0
    assert_clean(d)


STACK = """
name: gated
services:
  db:
    image: busybox:nyx
    restart: always
    command: [sh, -c, "sleep 2; mkdir -p /srv; echo db-ok > /srv/index.html; touch /tmp/ready;
      exec httpd -f -p 8000 -h /srv"]
    healthcheck:
      test: [CMD, test, -e, /tmp/ready]
      interval: 300ms
      retries: 50
  web:
    image: busybox:nyx
    depends_on:
      db: {condition: service_healthy}
    command: [sh, -c, "if wget -q -O - http://db:8000/; then echo db-was-ready; else
      echo db-was-not-ready; fi; exec httpd -f -p 80 -h /www"]
    ports: ["8094:80"]
"""


def test_compose_healthcheck_gates_the_dependent_and_restart_always_brings_db_back(
    nyxd_factory: Callable[..., Nyxd], tmp_path: Path
) -> None:
    d = nyxd_factory()
    work = tmp_path / "project"
    work.mkdir()
    (work / "compose.yaml").write_text(STACK)
    try:
        up = d.nyx("compose", "up", "-d", cwd=work, timeout=120)
        assert up.returncode == 0, up.stdout + up.stderr
        out = up.stdout
        assert out.index("gated-db-1  Healthy") < out.index("Container gated-web-1  Started"), out
        logs = d.nyx("compose", "logs", "web", cwd=work).stdout
        assert "db-ok" in logs and "db-was-ready" in logs and "not-ready" not in logs, logs
        ps = d.nyx("compose", "ps", cwd=work).stdout
        assert "(healthy)" in ps, ps
        # restart: always: db's process dies, nyxd brings it back, web reaches it again
        old = _crash(d, "gated-db-1")
        _back(d, "gated-db-1", old, 1)
        wait_for(lambda: _get(d, "gated-db-1")["health"]["status"] == "healthy", what="healthy")
        r = d.nyx("run", "--rm", "--network", "gated_default", "busybox:nyx",
                  "wget", "-q", "-O", "-", "http://db:8000/")  # fmt: skip
        assert "db-ok" in r.stdout, r.stdout + r.stderr
    finally:
        down = d.nyx("compose", "down", "-t", "1", cwd=work)
    assert down.returncode == 0, down.stdout + down.stderr
    assert d.client.request("GET", "/v1/containers", params={"all": 1}) == []
    assert_clean(d)
