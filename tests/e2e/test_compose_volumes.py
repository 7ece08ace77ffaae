"""E2E: a compose stack's named volume keeps its data across ``down`` + ``up`` and a nyxd
restart, and goes with ``down -v``; a read-only bind; a secret readable in the container and
private on the host; ``nyx volume`` refusing to remove a volume in use. A real nyxd (native
driver, runc) from the e2e kit."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from nyxd_e2e_kit import Nyxd

pytestmark = [pytest.mark.e2e, pytest.mark.kernel]

STACK = """
name: vols
services:
  db:
    image: busybox:nyx
    volumes:
      - data:/data
      - ./conf:/conf:ro
    secrets: [pw]
    stop_signal: SIGUSR1
    command:
      - sh
      - -c
      - |
        trap 'exit 0' USR1
        n=$$(cat /data/count 2>/dev/null || echo 0)
        echo $$((n + 1)) > /data/count
        cat /run/secrets/pw > /data/pw-seen
        cat /conf/app.conf > /data/conf-seen
        echo x > /conf/written 2>/dev/null || echo refused > /data/conf-ro
        while true; do sleep 0.2; done
volumes:
  data: {}
secrets:
  pw:
    file: ./pw.txt
"""


def _wait_for(path: Path, content: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip() == content:
            return
        time.sleep(0.1)
    got = path.read_text() if path.exists() else "(missing)"
    raise AssertionError(f"{path}: waited for {content!r}, got {got!r}")


def _nobody_reads(path: Path) -> str:
    proc = subprocess.run(
        ["/usr/bin/python3", "-c", "import sys; open(sys.argv[1]).read(); print('read')", path],
        user=65534,
        group=65534,
        extra_groups=[],
        capture_output=True,
        text=True,
        cwd="/",
    )
    return proc.stdout.strip() or proc.stderr.strip().splitlines()[-1].split(":")[0]


def test_named_volume_survives_down_up_and_nyxd_restart_and_goes_with_down_v(
    nyxd: Nyxd, tmp_path: Path
) -> None:
    work = tmp_path / "vols"
    (work / "conf").mkdir(parents=True)
    (work / "conf" / "app.conf").write_text("from-the-host\n")
    (work / "pw.txt").write_text("hunter2\n")
    (work / "pw.txt").chmod(0o600)
    (work / "compose.yaml").write_text(STACK)

    def nyx(*args: str) -> subprocess.CompletedProcess[str]:
        proc = nyxd.nyx(*args, timeout=180, cwd=work)
        assert proc.returncode == 0, f"nyx {' '.join(args)}: {proc.stdout}{proc.stderr}"
        return proc

    data = nyxd.state / "volumes" / "vols_data" / "_data"
    out = nyx("compose", "up", "-d").stdout
    assert "Volume vols_data  Created" in out
    _wait_for(data / "count", "1")
    _wait_for(data / "conf-ro", "refused")
    assert (data / "pw-seen").read_text() == "hunter2\n"
    assert (data / "conf-seen").read_text() == "from-the-host\n"
    assert not (work / "conf" / "written").exists()

    # the secret's copy nyxd made, and the volume's data, are root's alone on the host
    (container,) = nyxd.client.request("GET", "/v1/containers")
    secret_copy = nyxd.run / "containers" / container["id"] / "files" / "0"
    assert secret_copy.read_text() == "hunter2\n"
    assert _nobody_reads(secret_copy) == "PermissionError"
    assert _nobody_reads(data / "count") == "PermissionError"
    assert "vols_data" in nyx("volume", "ls").stdout

    # the volume is in use: nyx volume rm refuses, naming the container
    refused = nyxd.nyx("volume", "rm", "vols_data")
    assert refused.returncode == 125 and "in use by container(s) vols-db-1" in refused.stderr

    nyx("compose", "down")  # stop signal SIGUSR1: the trap exits 0 at once
    assert nyxd.client.request("GET", "/v1/containers", params={"all": 1}) == []
    assert (data / "count").read_text().strip() == "1"

    nyxd.stop()
    nyxd.start()
    assert [v["name"] for v in nyxd.client.request("GET", "/v1/volumes")] == ["vols_data"]
    out = nyx("compose", "up", "-d").stdout
    assert "Volume vols_data  Exists" in out
    _wait_for(data / "count", "2")  # the data of the first run was there

    out = nyx("compose", "down", "-v").stdout
    assert "Volume vols_data  Removed" in out
    assert nyxd.client.request("GET", "/v1/volumes") == []
    assert not (nyxd.state / "volumes" / "vols_data").exists()
    assert (work / "conf" / "app.conf").read_text() == "from-the-host\n"  # binds stay


def test_nyx_run_with_a_volume_and_a_readonly_bind(nyxd: Nyxd, tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    (share / "in.txt").write_text("hello\n")
    first = nyxd.nyx(
        "run", "--rm", "-v", "cache:/cache", "-v", f"{share}:/share:ro", "busybox:nyx",
        "sh", "-c", "cat /share/in.txt > /cache/copy; echo x > /share/out || echo refused",
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert "refused" in first.stdout and not (share / "out").exists()
    second = nyxd.nyx("run", "--rm", "-v", "cache:/cache", "busybox:nyx", "cat", "/cache/copy")
    assert second.returncode == 0 and "hello" in second.stdout
    gone = nyxd.nyx("volume", "rm", "cache")
    assert gone.returncode == 0 and gone.stdout.strip() == "cache"
