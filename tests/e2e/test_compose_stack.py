"""E2E: ``nyx compose`` runs a two-tier stack on a real nyxd (native driver, runc).

Everything happens in namespaces the test creates: nyxd runs in a throwaway "host" network
namespace (and its own mount namespace), an "external" namespace hangs off that host by a
veth (203.0.113.0/24) and serves HTTP. The stack: ``web`` (published on 8080, on ``front``
and ``back``) and ``backend`` (only on ``back``, which is ``internal: true``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nyx_core.testing import Netns, entered, snapshot

pytestmark = [pytest.mark.e2e, pytest.mark.kernel]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
EXT_HOST_IP = "203.0.113.1"
EXT_IP = "203.0.113.2"
IMAGE = "busybox:nyx"
CNI_BIN = "/usr/lib/cni"

STACK = f"""
name: twotier
services:
  backend:
    image: {IMAGE}
    networks:
      back:
        aliases: [api]
    command:
      - sh
      - -c
      - |
        mkdir -p /srv && echo backend-ok > /srv/index.html
        httpd -p 8000 -h /srv
        trap 'exit 0' TERM
        while true; do
          if nc -w 2 {EXT_IP} 8000 </dev/null >/dev/null 2>&1; then s=reached; else s=blocked; fi
          echo $$s > /srv/external.txt
          sleep 1
        done
  web:
    image: {IMAGE}
    depends_on: [backend]
    networks: [back, front]
    ports: ["8080:80"]
    command:
      - sh
      - -c
      - |
        mkdir -p /www && echo web-ok > /www/index.html
        httpd -p 80 -h /www
        trap 'exit 0' TERM
        while true; do
          wget -q -O /tmp/b http://backend:8000/ && mv /tmp/b /www/backend.txt
          wget -q -O /tmp/a http://api:8000/ && mv /tmp/a /www/alias.txt
          wget -q -O /tmp/e http://backend:8000/external.txt && mv /tmp/e /www/backend-external.txt
          printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {EXT_IP} 8000 > /tmp/x \\
            && mv /tmp/x /www/external.txt
          sleep 1
        done
networks:
  front: {{}}
  back:
    internal: true
"""


@dataclass
class Nyxd:
    socket: str
    host: Netns
    ext: Netns
    workdir: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "NYXD_SOCKET": self.socket}

    def nyx(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(BIN / "nyx"), *args],
            env=self.env(),
            cwd=self.workdir,
            text=True,
            capture_output=True,
            timeout=180,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"nyx {' '.join(args)} failed: {proc.stdout}{proc.stderr}")
        return proc

    def api(self, path: str) -> object:
        out = subprocess.run(
            ["curl", "-sf", "--unix-socket", self.socket, f"http://nyxd{path}"],
            text=True,
            capture_output=True,
            check=True,
            timeout=30,
        ).stdout
        return json.loads(out)


def _missing() -> str | None:
    for tool in ("runc", "nsenter", "unshare", "curl"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if not Path("/bin/busybox").is_file():
        return "needs busybox-static (/bin/busybox)"
    if not (BIN / "nyxd").is_file():
        return "needs the nyxd entry point in the venv"
    return None


@pytest.fixture
def ext_ns(nyx_host_ns: Netns, tmp_path: Path) -> Iterator[Netns]:
    """An "external" namespace on 203.0.113.2, reachable from the host ns, serving HTTP."""
    ext = Netns.create("ext")
    server: subprocess.Popen[bytes] | None = None
    try:
        nyx_host_ns.ip(
            "link", "add", "ext0", "type", "veth", "peer", "name", "eth0", "netns", ext.name
        )
        nyx_host_ns.ip("addr", "add", f"{EXT_HOST_IP}/24", "dev", "ext0")
        nyx_host_ns.ip("link", "set", "ext0", "up")
        ext.ip("addr", "add", f"{EXT_IP}/24", "dev", "eth0")
        ext.ip("link", "set", "eth0", "up")
        www = tmp_path / "ext-www"
        www.mkdir()
        (www / "index.html").write_text("external-ok\n")
        server = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ext.name,
                sys.executable,
                "-m",
                "http.server",
                "--bind",
                EXT_IP,
                "8000",
                "--directory",
                str(www),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        yield ext
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(10)
        ext.delete()


@pytest.fixture
def nyxd(
    request: pytest.FixtureRequest, nyx_host_ns: Netns, ext_ns: Netns, tmp_path: Path
) -> Iterator[Nyxd]:
    """nyxd in the host namespace and a mount namespace of its own.

    Native driver and ``--dns auto`` unless parametrized (indirectly) with extra flags.
    """
    why = _missing()
    if why:
        pytest.skip(why)
    flags: list[str] = list(getattr(request, "param", ()))
    if "cni" in flags:
        if not Path(CNI_BIN, "bridge").is_file():
            pytest.skip(f"needs the CNI plugins in {CNI_BIN} (containernetworking-plugins)")
        flags += ["--cni-bin-dir", CNI_BIN, "--cni-conf-dir", str(tmp_path / "cni")]
    work = tmp_path / "w"
    work.mkdir()
    sock = str(tmp_path / "nyxd.sock")
    log = (tmp_path / "nyxd.log").open("wb")
    proc = subprocess.Popen(
        [
            "nsenter",
            f"--net={nyx_host_ns.path}",
            "--",
            "unshare",
            "--mount",
            "--propagation",
            "slave",
            str(BIN / "nyxd"),
            "--socket",
            sock,
            "--state-dir",
            str(tmp_path / "state"),
            "--run-dir",
            str(tmp_path / "run"),
            "--log-level",
            "debug",
            *flags,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(300):
            if Path(sock).exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        if not Path(sock).exists():
            raise AssertionError(
                f"nyxd did not start: {(tmp_path / 'nyxd.log').read_text()[-2000:]}"
            )
        daemon = Nyxd(socket=sock, host=nyx_host_ns, ext=ext_ns, workdir=work)
        tar = tmp_path / "busybox.tar"
        subprocess.run(
            [sys.executable, str(ROOT / "examples" / "busybox_image.py"), str(tar)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        daemon.nyx("load", "-i", str(tar))
        yield daemon
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.close()


def _get(url: str, ns: Netns) -> str | None:
    with entered(ns):
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                return str(resp.read().decode())
        except OSError:
            return None


def _wait_for(url: str, ns: Netns, want: str, timeout: float = 60) -> str | None:
    """Poll ``url`` until its body contains ``want`` (or give up); returns the last body."""
    deadline = time.monotonic() + timeout
    body = None
    while time.monotonic() < deadline:
        body = _get(url, ns)
        if body is not None and want in body:
            return body
        time.sleep(0.5)
    return body


def test_two_tier_stack(nyxd: Nyxd) -> None:
    (nyxd.workdir / "compose.yaml").write_text(STACK)
    before = snapshot(nyxd.host)

    up = nyxd.nyx("compose", "up", "-d")
    assert "Container twotier-web-1  Started" in up.stdout
    try:
        nets = {n["name"]: n for n in nyxd.api("/v1/networks")}  # type: ignore[union-attr]
        assert nets["twotier_back"]["internal"] is True
        assert nets["twotier_front"]["internal"] is False

        ps = nyxd.nyx("compose", "ps").stdout
        rows = {line.split()[0]: line for line in ps.splitlines()[1:]}
        assert set(rows) == {"twotier-backend-1", "twotier-web-1"}
        assert "running" in rows["twotier-web-1"] and "8080:80/tcp" in rows["twotier-web-1"]

        web = "http://127.0.0.1:8080"
        # the published port answers, from the host and from an external client
        assert _wait_for(f"{web}/", nyxd.host, "web-ok") == "web-ok\n"
        outside = _wait_for(f"http://{EXT_HOST_IP}:8080/", nyxd.ext, "web-ok")
        assert outside == "web-ok\n"
        # web reaches backend by service name and by alias on the internal network
        assert _wait_for(f"{web}/backend.txt", nyxd.host, "backend-ok") == "backend-ok\n"
        assert _wait_for(f"{web}/alias.txt", nyxd.host, "backend-ok") == "backend-ok\n"
        # web (also on a normal network) reaches the external namespace ...
        assert "external-ok" in (_wait_for(f"{web}/external.txt", nyxd.host, "external-ok") or "")
        # ... backend (only on the internal network) does not
        verdict = _wait_for(f"{web}/backend-external.txt", nyxd.host, "e")
        assert verdict == "blocked\n"
    finally:
        down = nyxd.nyx("compose", "down", "-t", "1", check=False)
    assert down.returncode == 0, down.stdout + down.stderr
    assert nyxd.api("/v1/containers?all=1") == []
    assert [n["name"] for n in nyxd.api("/v1/networks")] == ["nyx"]  # type: ignore[union-attr]
    assert snapshot(nyxd.host) == before


def test_invalid_files_are_refused_before_anything_is_created(nyxd: Nyxd) -> None:
    cases = {
        "ports.yaml": (
            STACK.replace('"8080:80"', '"8080:99999"'),
            "services.web.ports[0]: port mapping '8080:99999'",
        ),
        "network.yaml": (
            STACK.replace("networks: [back, front]", "networks: [back, nowhere]"),
            "services.web.networks[1]: network is not declared",
        ),
        "cycle.yaml": (
            STACK.replace(
                "    networks:\n      back:\n",
                "    depends_on: [web]\n    networks:\n      back:\n",
            ),
            "dependency cycle",
        ),
        "yaml.yaml": ("services: [\n", "invalid YAML"),
    }
    for name, (text, message) in cases.items():
        (nyxd.workdir / name).write_text(text)
        result = nyxd.nyx("compose", "-f", name, "up", "-d", check=False)
        assert result.returncode != 0, name
        assert message in result.stderr, (name, result.stderr)
        assert "Traceback" not in result.stderr
    assert nyxd.api("/v1/containers?all=1") == []
    assert [n["name"] for n in nyxd.api("/v1/networks")] == ["nyx"]  # type: ignore[union-attr]


# ---------------------------------------------------------------- the DNS policy, e2e

PROBE = (
    "if [ ! -f /etc/resolv.conf ]; then echo dns=none; "
    "elif grep -q 'embedded DNS' /etc/resolv.conf; then echo dns=embedded; "
    "else echo dns=other; fi"
)


def _probe_stack(first_internal: bool, second_internal: bool) -> str:
    """Two one-shot services, each on one network (the CNI driver attaches one network)."""
    return f"""
name: dnsprobe
services:
  a: {{image: {IMAGE}, networks: [n1], command: [sh, -c, "{PROBE}"]}}
  b: {{image: {IMAGE}, networks: [n2], command: [sh, -c, "{PROBE}"]}}
networks:
  n1: {{internal: {str(first_internal).lower()}}}
  n2: {{internal: {str(second_internal).lower()}}}
"""


def _dns_seen(nyxd: Nyxd, stack: str) -> dict[str, str]:
    """``up`` in the foreground (it returns once both one-shot services exited)."""
    (nyxd.workdir / "compose.yaml").write_text(stack)
    try:
        up = nyxd.nyx("compose", "up")
    finally:
        down = nyxd.nyx("compose", "down", "-t", "1", check=False)
    assert down.returncode == 0, down.stdout + down.stderr
    seen = {}
    for line in up.stdout.splitlines():
        prefix, sep, text = line.partition("|")
        if sep and text.strip().startswith("dns="):
            seen[prefix.strip().removesuffix("-1")] = text.strip().removeprefix("dns=")
    return seen


ALL_INTERNAL = _probe_stack(True, True)
MIXED = _probe_stack(True, False)


@pytest.mark.parametrize(
    ("nyxd", "expected"),
    [
        # native + auto: embedded DNS for every container, whatever the networks
        ((), {"internal": "embedded", "mixed": "embedded"}),
        (("--dns", "embedded"), {"internal": "embedded", "mixed": "embedded"}),
        (("--dns", "cni"), {"internal": "other", "mixed": "other"}),
        (("--dns", "off"), {"internal": "none", "mixed": "none"}),
        # cni + auto: embedded only when every service is solely on internal networks
        (("--net-driver", "cni"), {"internal": "embedded", "mixed": "other"}),
        (
            ("--net-driver", "cni", "--dns", "embedded"),
            {"internal": "embedded", "mixed": "embedded"},
        ),
        (("--net-driver", "cni", "--dns", "cni"), {"internal": "other", "mixed": "other"}),
        (("--net-driver", "cni", "--dns", "off"), {"internal": "none", "mixed": "none"}),
    ],
    indirect=["nyxd"],
    ids=[
        "native-auto",
        "native-embedded",
        "native-cni",
        "native-off",
        "cni-auto",
        "cni-embedded",
        "cni-cni",
        "cni-off",
    ],
)
def test_dns_policy_table(nyxd: Nyxd, expected: dict[str, str]) -> None:
    internal = _dns_seen(nyxd, ALL_INTERNAL)
    assert internal == {"a": expected["internal"], "b": expected["internal"]}
    mixed = _dns_seen(nyxd, MIXED)
    assert mixed == {"a": expected["mixed"], "b": expected["mixed"]}
    assert nyxd.api("/v1/containers?all=1") == []
