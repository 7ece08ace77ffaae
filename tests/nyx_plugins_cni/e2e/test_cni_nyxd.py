"""nyxd with ``-net-driver=cni`` and Debian's plugins: run, publish, stop, restart, GC."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from nyxd_e2e_kit import Nyxd

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.kernel,
    pytest.mark.skipif(not Path("/usr/lib/cni/bridge").exists(), reason="needs CNI plugins"),
]

HTTPD = ["httpd", "-f", "-p", "80", "-h", "/www"]
PAGE = "hello from nyx"


def _wait(pred: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _flags(tmp_path: Path) -> list[str]:
    return [
        "-net-driver=cni",
        "-cni-bin-dir=/usr/lib/cni",
        f"-cni-conf-dir={tmp_path / 'net.d'}",
        "-network=nyx",
        "--dns",
        "cni",
    ]


def _start(factory: Callable[..., Nyxd], tmp_path: Path) -> Nyxd:
    return factory(*_flags(tmp_path))


def _cache(d: Nyxd) -> list[str]:
    results = d.state / "cni" / "results"
    return sorted(p.name for p in results.iterdir()) if results.is_dir() else []


def _curl(d: Nyxd, port: int) -> str:
    return d.host("curl", "-s", "-m", "2", f"http://127.0.0.1:{port}/").stdout


def test_run_publish_stop_with_cni(nyxd_factory: Callable[..., Nyxd], tmp_path: Path) -> None:
    d = _start(nyxd_factory, tmp_path)
    conflist = json.loads((tmp_path / "net.d" / "nyx.conflist").read_text())
    assert [p["type"] for p in conflist["plugins"]] == ["bridge", "portmap"]
    r = d.nyx("run", "-d", "--name", "web", "-p", "8080:80", "busybox:nyx", *HTTPD)
    assert r.returncode == 0, r.stderr + d.log.read_text()[-3000:]
    web = d.client.request("GET", "/v1/containers/web")
    assert web["ips"][0].startswith(f"10.231.{d.octet}.")
    assert _wait(lambda: PAGE in _curl(d, 8080), "127.0.0.1:8080 through portmap")
    assert any(name.startswith("nyx-") for name in _cache(d))
    assert d.nyx("stop", "-t", "1", "web").returncode == 0
    assert _cache(d) == []
    assert d.veths() == []
    assert d.nyx("rm", "web").returncode == 0


def test_kill9_restart_tears_down_from_the_cache(
    nyxd_factory: Callable[..., Nyxd], tmp_path: Path
) -> None:
    d = _start(nyxd_factory, tmp_path)
    r = d.nyx("run", "-d", "--name", "c0", "-p", "8091:80", "busybox:nyx", *HTTPD)
    assert r.returncode == 0, r.stderr
    assert _wait(lambda: PAGE in _curl(d, 8091), "8091")
    assert len(d.veths()) == 1
    d.kill9()
    d.start(*_flags(tmp_path))
    # reconcile DELs the old attachment with the cached result, GC finds nothing left
    assert _cache(d) == []
    assert d.veths() == []
    assert "CNI-DN-" not in d.host("iptables-save", "-t", "nat").stdout
    leases = d.state / "cni" / "networks" / "nyx"
    assert not [p for p in leases.iterdir() if p.name[0].isdigit()]
    assert d.nyx("rm", "c0").returncode == 0
    assert d.stop() == 0
