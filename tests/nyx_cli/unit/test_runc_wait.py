"""``runc run -d`` is awaited on its pidfd: the exit status and the timeout stay those of
``subprocess.run`` (the speed itself is bench/bench_e2e.py's to show)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from nyx_cli.runtime._runc import _run_exact


def test_exit_code_and_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        done = _run_exact(["sh", "-c", "echo hi; echo err >&2; exit 3"], stdout=fd, timeout=30)
    finally:
        os.close(fd)
    assert done.returncode == 3
    assert out.read_text() == "hi\nerr\n"


def test_timeout_kills_and_raises(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    with pytest.raises(subprocess.TimeoutExpired):
        _run_exact(
            ["sh", "-c", f"echo $$ > {pidfile}; exec sleep 60"],
            stdout=subprocess.DEVNULL,
            timeout=0.5,
        )
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped
