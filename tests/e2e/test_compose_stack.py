"""E2E: ``nyx compose`` runs a two-tier stack on a real nyxd (native driver, runc).

Uses the nyxd e2e kit (``tests/e2e/nyxd_e2e_kit.py``): nyxd runs in a throwaway "host"
network namespace (and a mount namespace of its own); ``external_ns`` is that host's LAN
neighbour (198.51.100.2, the host being 198.51.100.1) and serves HTTP here. The stack:
``web`` (published on 8080, on ``front`` and ``back``) and ``backend`` (only on ``back``,
which is ``internal: true``).
The DNS policy table is checked with both drivers through one-shot compose services.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nyxd_e2e_kit import Nyxd

from nyx_core.testing import LAN_HOST_IP, LAN_NEIGHBOUR_IP, Netns, entered, snapshot

pytestmark = [pytest.mark.e2e, pytest.mark.kernel]

EXT_HOST_IP = LAN_HOST_IP
EXT_IP = LAN_NEIGHBOUR_IP
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
class Stack:
    """A compose project directory on one nyxd, with the namespaces around it."""

    daemon: Nyxd
    workdir: Path
    ext: Netns | None = None

    @property
    def host(self) -> Netns:
        return self.daemon.ns

    def nyx(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = self.daemon.nyx(*args, timeout=180, cwd=self.workdir)
        if check and proc.returncode != 0:
            raise AssertionError(f"nyx {' '.join(args)} failed: {proc.stdout}{proc.stderr}")
        return proc

    def api(self, path: str) -> Any:
        return self.daemon.client.request("GET", path)


@pytest.fixture
def ext_http(external_ns: tuple[Netns, str], tmp_path: Path) -> Iterator[Netns]:
    """The kit's LAN neighbour, serving ``external-ok`` on 198.51.100.2:8000: yielded once
    it answers there, so a container's "blocked" verdict is never the server still
    starting."""
    ext, host_ip = external_ns
    assert host_ip == EXT_HOST_IP
    www = tmp_path / "ext-www"
    www.mkdir()
    (www / "index.html").write_text("external-ok\n")
    argv = [sys.executable, "-m", "http.server", "--bind", EXT_IP, "8000", "--directory"]
    server = subprocess.Popen(
        ["ip", "netns", "exec", ext.name, *argv, str(www)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while _get(f"http://{EXT_IP}:8000/", ext) != "external-ok\n":
            assert server.poll() is None, "the outside HTTP server died"
            assert time.monotonic() < deadline, "the outside HTTP server does not answer"
            time.sleep(0.1)
        yield ext
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


@pytest.fixture
def stack(nyxd: Nyxd, ext_http: Netns, tmp_path: Path) -> Stack:
    work = tmp_path / "project"
    work.mkdir()
    return Stack(daemon=nyxd, workdir=work, ext=ext_http)


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


OTHER = """
name: other
services:
  probe:
    image: {image}
    command:
      - sh
      - -c
      - |
        for name in probe backend api web; do
          if nslookup $$name >/dev/null 2>&1; then s=found; else s=missing; fi
          echo "dns $$name $$s"
        done
        for target in {targets}; do
          req='GET / HTTP/1.0\\r\\n\\r\\n'
          if printf "$$req" | nc -w 2 $${{target%:*}} $${{target#*:}} | grep -q 200; then
            s=reached
          else
            s=blocked
          fi
          echo "tcp $$target $$s"
        done
"""


def _another_stack_is_isolated(stack: Stack) -> None:
    """A second project neither resolves nor reaches the first one's services, while its
    own DNS and its way out work (the positive controls: a probe that can resolve nothing
    or reach nothing must not pass)."""
    by_name = {c["name"]: c["ips"] for c in stack.api("/v1/containers")}
    targets = [f"{ip}:8000" for ip in by_name["twotier-backend-1"]]
    targets += [f"{ip}:80" for ip in by_name["twotier-web-1"]]
    assert len(targets) == 3  # backend on back; web on front and back
    other = Stack(daemon=stack.daemon, workdir=stack.workdir / "other")
    other.workdir.mkdir()
    (other.workdir / "compose.yaml").write_text(
        OTHER.format(image=IMAGE, targets=" ".join([*targets, f"{EXT_IP}:8000"]))
    )
    try:
        up = other.nyx("compose", "up")
    finally:
        down = other.nyx("compose", "down", "-t", "1", check=False)
    assert down.returncode == 0, down.stdout + down.stderr
    said = {line.partition("|")[2].strip() for line in up.stdout.splitlines() if "|" in line}
    assert "dns probe found" in said, up.stdout  # its own name: the DNS probe itself works
    assert {"dns backend missing", "dns api missing", "dns web missing"} <= said, up.stdout
    assert {f"tcp {t} blocked" for t in targets} <= said, up.stdout
    assert f"tcp {EXT_IP}:8000 reached" in said, up.stdout  # the probe itself works


def test_two_tier_stack(stack: Stack) -> None:
    (stack.workdir / "compose.yaml").write_text(STACK)
    before = snapshot(stack.host)

    up = stack.nyx("compose", "up", "-d")
    assert "Container twotier-web-1  Started" in up.stdout
    try:
        nets = {n["name"]: n for n in stack.api("/v1/networks")}
        assert nets["twotier_back"]["internal"] is True
        assert nets["twotier_front"]["internal"] is False

        ps = stack.nyx("compose", "ps").stdout
        rows = {line.split()[0]: line for line in ps.splitlines()[1:]}
        assert set(rows) == {"twotier-backend-1", "twotier-web-1"}
        assert " Up " in rows["twotier-web-1"] and "8080:80/tcp" in rows["twotier-web-1"]

        web = "http://127.0.0.1:8080"
        # the published port answers, from the host and from an external client
        assert _wait_for(f"{web}/", stack.host, "web-ok") == "web-ok\n"
        assert stack.ext is not None
        outside = _wait_for(f"http://{EXT_HOST_IP}:8080/", stack.ext, "web-ok")
        assert outside == "web-ok\n"
        # web reaches backend by service name and by alias on the internal network
        assert _wait_for(f"{web}/backend.txt", stack.host, "backend-ok") == "backend-ok\n"
        assert _wait_for(f"{web}/alias.txt", stack.host, "backend-ok") == "backend-ok\n"
        # web (also on a normal network) reaches the external namespace ...
        assert "external-ok" in (_wait_for(f"{web}/external.txt", stack.host, "external-ok") or "")
        # ... backend (only on the internal network) does not
        verdict = _wait_for(f"{web}/backend-external.txt", stack.host, "e")
        assert verdict == "blocked\n"
        _another_stack_is_isolated(stack)
    finally:
        down = stack.nyx("compose", "down", "-t", "1", check=False)
    assert down.returncode == 0, down.stdout + down.stderr
    assert stack.api("/v1/containers?all=1") == []
    assert [n["name"] for n in stack.api("/v1/networks")] == ["nyx"]
    assert snapshot(stack.host) == before


def test_invalid_files_are_refused_before_anything_is_created(stack: Stack) -> None:
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
        (stack.workdir / name).write_text(text)
        result = stack.nyx("compose", "-f", name, "up", "-d", check=False)
        assert result.returncode != 0, name
        assert message in result.stderr, (name, result.stderr)
        assert "Traceback" not in result.stderr
    assert stack.api("/v1/containers?all=1") == []
    assert [n["name"] for n in stack.api("/v1/networks")] == ["nyx"]


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


def _dns_seen(project: Stack, text: str) -> dict[str, str]:
    """``up`` in the foreground (it returns once both one-shot services exited)."""
    (project.workdir / "compose.yaml").write_text(text)
    try:
        up = project.nyx("compose", "up")
    finally:
        down = project.nyx("compose", "down", "-t", "1", check=False)
    assert down.returncode == 0, down.stdout + down.stderr
    seen = {}
    for line in up.stdout.splitlines():
        prefix, sep, said = line.partition("|")
        if sep and said.strip().startswith("dns="):
            seen[prefix.strip().removesuffix("-1")] = said.strip().removeprefix("dns=")
    return seen


ALL_INTERNAL = _probe_stack(True, True)
MIXED = _probe_stack(True, False)


@pytest.mark.parametrize(
    ("flags", "expected"),
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
def test_dns_policy_table(
    nyxd_factory: Callable[..., Nyxd],
    tmp_path: Path,
    flags: tuple[str, ...],
    expected: dict[str, str],
) -> None:
    if flags[:2] == ("--net-driver", "cni"):  # the CNI driver's own flags exist only then
        if not Path(CNI_BIN, "bridge").is_file():
            pytest.skip(f"needs the CNI plugins in {CNI_BIN} (containernetworking-plugins)")
        flags = (*flags, "--cni-bin-dir", CNI_BIN, "--cni-conf-dir", str(tmp_path / "cni"))
    work = tmp_path / "project"
    work.mkdir()
    stack = Stack(daemon=nyxd_factory(*flags), workdir=work)
    internal = _dns_seen(stack, ALL_INTERNAL)
    assert internal == {"a": expected["internal"], "b": expected["internal"]}
    mixed = _dns_seen(stack, MIXED)
    assert mixed == {"a": expected["mixed"], "b": expected["mixed"]}
    assert stack.api("/v1/containers?all=1") == []


def test_restart_on_failure_is_nyxd_s_and_up_follows_the_restarts(
    nyxd: Nyxd, tmp_path: Path
) -> None:
    """nyxd restarts the failing service (on-failure:2: three runs in all); the foreground
    ``up`` only follows its output across the restarts, and ends once it stays down."""
    stack = Stack(daemon=nyxd, workdir=tmp_path / "project")
    stack.workdir.mkdir()
    (stack.workdir / "compose.yaml").write_text(
        f"""
name: flaky
services:
  job: {{image: {IMAGE}, restart: "on-failure:2", command: [sh, -c, "echo attempt; exit 3"]}}
  once: {{image: {IMAGE}, command: [sh, -c, "echo once; exit 1"]}}
"""
    )
    try:
        up = stack.nyx("compose", "up")
        job = stack.api("/v1/containers/flaky-job-1")
        ps = stack.nyx("compose", "ps").stdout
    finally:
        down = stack.nyx("compose", "down", "-t", "1", check=False)
    assert down.returncode == 0, down.stdout + down.stderr
    assert up.stdout.count("job-1   | attempt") == 3, up.stdout
    assert up.stdout.count("once-1  | once") == 1, up.stdout
    assert (job["state"], job["exit_code"], job["restart_count"]) == ("exited", 3, 2)
    assert "Restarting" not in up.stdout  # nothing recreated by the client
    assert re.search(r"flaky-job-1 +job +Exited \(3\) .* ago +2 ", ps), ps
    assert stack.api("/v1/containers?all=1") == []
