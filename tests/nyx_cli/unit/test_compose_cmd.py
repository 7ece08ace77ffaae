"""``nyx compose`` against a fake nyxd serving the /v1 API on a temporary unix socket."""

from __future__ import annotations

import json
import os
import signal
import socketserver
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import click
import pytest
from click.testing import CliRunner, Result

from nyx_cli.compose._cli import compose
from nyx_cli.compose._file import load_yaml
from nyx_cli.daemon._models import ContainerSpec

TWO_TIER = """\
services:
  web:
    image: busybox
    command: httpd -f -p 80
    ports: ["8080:80"]
    networks: [front, back]
    depends_on: [backend]
  backend:
    image: busybox
    networks:
      back:
        aliases: [api]
networks:
  front: {}
  back:
    internal: true
"""


class FakeNyxd:
    """Just enough of nyxd's API, recording every request."""

    def __init__(self) -> None:
        self.networks: dict[str, dict[str, Any]] = {}
        self.containers: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, Any]] = []
        self.fail: dict[tuple[str, str], tuple[int, str]] = {}
        self.fail_create: dict[str, tuple[int, str]] = {}
        self.logs: dict[str, list[str]] = {}
        self.exits: dict[str, list[int]] = {}
        self.progress: dict[str, list[dict[str, Any]]] = {}  # name -> updates, one per GET
        self.driver = "native"
        self.hold_follow = threading.Event()
        self.hold_follow.set()
        self.following = threading.Event()
        self.stop_gate: threading.Event | None = None
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self._next = 0

    # -- helpers for tests
    def calls(self, method: str | None = None, prefix: str = "") -> list[tuple[str, str, Any]]:
        return [
            r
            for r in self.requests
            if (method is None or r[0] == method) and r[1].startswith(prefix)
        ]

    def by_name(self, name: str) -> dict[str, Any]:
        return next(c for c in self.containers if c["name"] == name)

    # -- request handling
    def handle(self, method: str, raw_path: str, body: Any) -> tuple[int, Any]:
        url = urlsplit(raw_path)
        path = unquote(url.path)
        query = parse_qs(url.query)
        with self.lock:
            self.requests.append((method, raw_path, body))
            for (m, prefix), answer in self.fail.items():
                if m == method and path.startswith(prefix):
                    return answer[0], {"error": answer[1]}
            return self._route(method, path, query, body)

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        if parts == ["v1", "info"] and method == "GET":
            caps = {
                "native": {
                    "multiple_networks": True,
                    "enforces_internal": True,
                    "static_addresses": True,
                },
                "cni": {"multiple_networks": False, "enforces_internal": False},
            }[self.driver]
            return 200, {"driver": self.driver, "dns": "auto", "capabilities": caps}
        if parts[:2] == ["v1", "networks"]:
            if method == "POST" and len(parts) == 2:
                name = body["name"]
                if name in self.networks:
                    return 409, {"error": f"network {name} exists"}
                n = len(self.networks) + 1
                net = {
                    "name": name,
                    "subnet": body.get("subnet") or f"10.89.{n}.0/24",
                    "gateway": f"{body.get('gateway') or f'10.89.{n}.1'}/24",
                    "internal": bool(body.get("internal")),
                    "options": dict(body.get("options") or {}),
                    "labels": dict(body.get("labels") or {}),
                }
                self.networks[name] = net
                return 201, net
            if method == "GET" and len(parts) == 2:
                return 200, list(self.networks.values())
            if method == "GET" and len(parts) == 3:
                if parts[2] not in self.networks:
                    return 404, {"error": f"no such network: {parts[2]}"}
                return 200, self.networks[parts[2]]
            if method == "DELETE" and len(parts) == 3:
                if parts[2] not in self.networks:
                    return 404, {"error": f"no such network {parts[2]}"}
                if any(
                    parts[2] in [a["name"] for a in c["spec"]["networks"]] for c in self.containers
                ):
                    return 409, {"error": f"network {parts[2]} in use"}
                del self.networks[parts[2]]
                return 204, None
        if parts[:2] == ["v1", "containers"]:
            if method == "POST" and len(parts) == 2:
                assert body.pop("start") is True
                spec = ContainerSpec.model_validate(body)
                if spec.name in self.fail_create:
                    status, message = self.fail_create[spec.name]
                    return status, {"error": message}
                for att in spec.networks:
                    if att.name not in self.networks:
                        return 404, {"error": f"no such network {att.name}"}
                if any(c["name"] == spec.name for c in self.containers):
                    return 409, {"error": f"container name {spec.name} in use"}
                self._next += 1
                c = {
                    "id": f"c{self._next:04d}",
                    "name": spec.name,
                    "state": "running",
                    "labels": spec.labels,
                    "ips": [f"10.89.1.{self._next + 1}"],
                    "ports": [p.model_dump(mode="json") for p in spec.ports],
                    "spec": spec.model_dump(mode="json"),
                    "restart": spec.restart,
                    "restart_count": 0,
                    "health": (
                        {"status": "starting", "failing_streak": 0, "log": []}
                        if spec.healthcheck is not None and spec.healthcheck.test != ["NONE"]
                        else None
                    ),
                }
                self.containers.append(c)
                return 201, c
            if method == "GET" and len(parts) == 2:
                wanted = query.get("label", [])
                out = []
                for c in self.containers:
                    ok = all(
                        c["labels"].get(k) == v for k, _, v in (w.partition("=") for w in wanted)
                    )
                    if ok and (query.get("all") == ["1"] or c["state"] == "running"):
                        out.append({k: v for k, v in c.items() if k != "spec"})
                return 200, out
            matches = [c for c in self.containers if c["id"] == parts[2]]
            if not matches:
                return 404, {"error": f"no such container {parts[2]}"}
            c = matches[0]
            if method == "GET" and len(parts) == 3:
                updates = self.progress.get(c["name"])
                if updates:
                    c.update(updates.pop(0))
                return 200, {k: v for k, v in c.items() if k != "spec"}
            if method == "POST" and parts[3:] == ["stop"]:
                gate = self.stop_gate
                if gate is not None and query.get("timeout") != ["0"]:
                    self.stopping.set()
                    self.lock.release()
                    try:
                        gate.wait(10)
                    finally:
                        self.lock.acquire()
                c["state"] = "exited"
                return 200, {"id": c["id"], "state": "exited"}
            if method == "DELETE" and len(parts) == 3:
                if c["state"] == "running" and query.get("force") != ["1"]:
                    return 409, {"error": "container is running"}
                joined = [
                    o["name"]
                    for o in self.containers
                    if o["spec"].get("network_mode") in (f"container:{c['name']}",)
                ]
                if joined:  # as nyxd: not while another container is in its netns
                    return 409, {"error": f"container {c['name']} is the network of {joined}"}
                self.containers.remove(c)
                return 204, None
        return 404, {"error": f"no route {method} {path}"}


def _handler(fake: FakeNyxd) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, payload: Any) -> None:
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if data:
                self.wfile.write(data)

        def _body(self) -> Any:
            n = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(n)) if n else None

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            parts = url.path.strip("/").split("/")
            if len(parts) == 4 and parts[3] == "logs":
                fake.requests.append(("GET", self.path, None))
                c = [c for c in fake.containers if c["id"] == parts[2]]
                if not c:
                    self._send(404, {"error": "no such container"})
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                for line in fake.logs.get(c[0]["name"], []):
                    self.wfile.write(line.encode() + b"\n")
                    self.wfile.flush()
                if "follow=1" in url.query:
                    fake.following.set()
                    fake.hold_follow.wait(10)
                    codes = fake.exits.get(c[0]["name"])
                    if codes:
                        with fake.lock:
                            c[0]["state"], c[0]["exit_code"] = "exited", codes.pop(0)
                return
            self._send(*fake.handle("GET", self.path, None))

        def do_POST(self) -> None:
            self._send(*fake.handle("POST", self.path, self._body()))

        def do_DELETE(self) -> None:
            self._send(*fake.handle("DELETE", self.path, None))

    return Handler


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    errors: list[BaseException]

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if exc is not None and not isinstance(exc, BrokenPipeError | ConnectionResetError):
            self.errors.append(exc)


@pytest.fixture
def fake() -> Iterator[tuple[FakeNyxd, str]]:
    with tempfile.TemporaryDirectory(prefix="nyxc-") as d:
        sock = os.path.join(d, "nyxd.sock")
        daemon = FakeNyxd()
        server = _Server(sock, _handler(daemon))
        server.errors = []
        t = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        t.start()
        try:
            yield daemon, sock
        finally:
            daemon.hold_follow.set()
            server.shutdown()
            server.server_close()
            t.join(5)
        assert server.errors == [], "the fake nyxd failed: see its errors"


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "My.Stack"
    d.mkdir()
    (d / "compose.yaml").write_text(TWO_TIER)
    monkeypatch.chdir(d)
    monkeypatch.delenv("COMPOSE_PROJECT_NAME", raising=False)
    monkeypatch.delenv("NYXD_SOCKET", raising=False)
    return d


def run(sock: str, *args: str, **kw: Any) -> Result:
    return CliRunner().invoke(compose, ["--socket", sock, *args], catch_exceptions=False, **kw)


# ---------------------------------------------------------------- up


def test_up_detached_creates_networks_then_containers_in_order(
    fake: tuple[FakeNyxd, str], project_dir: Path
) -> None:
    daemon, sock = fake
    result = run(sock, "up", "-d")
    assert result.exit_code == 0, result.output
    assert [r[2] for r in daemon.calls("POST", "/v1/networks")] == [
        {"name": "mystack_front", "internal": False},
        {"name": "mystack_back", "internal": True},
    ]
    created = [r[2] for r in daemon.calls("POST", "/v1/containers")]
    assert [c["name"] for c in created] == ["mystack-backend-1", "mystack-web-1"]
    backend, web = (ContainerSpec.model_validate(c["spec"]) for c in daemon.containers)
    assert backend.hostname == "backend"
    assert [(a.name, a.aliases, a.internal) for a in backend.networks] == [
        ("mystack_back", ["backend", "api"], True)
    ]
    assert [(a.name, a.internal) for a in web.networks] == [
        ("mystack_front", False),
        ("mystack_back", True),
    ]
    assert web.stack == "mystack"
    assert web.stack_services is not None and set(web.stack_services) == {"web", "backend"}
    assert web.labels["com.nyx.compose.project"] == "mystack"
    assert web.labels["com.nyx.compose.service"] == "web"
    assert web.command == ["httpd", "-f", "-p", "80"]
    assert str(web.ports[0]) == "8080:80/tcp"
    assert "Network mystack_back  Created" in result.output
    assert "Container mystack-web-1  Started" in result.output


def test_up_again_reuses_networks_and_keeps_unchanged_containers(
    fake: tuple[FakeNyxd, str], project_dir: Path
) -> None:
    daemon, sock = fake
    assert run(sock, "up", "-d").exit_code == 0
    ids = [c["id"] for c in daemon.containers]
    result = run(sock, "up", "-d")
    assert result.exit_code == 0, result.output
    assert "Network mystack_front  Exists" in result.output
    assert "Container mystack-web-1  Running" in result.output
    assert [c["id"] for c in daemon.containers] == ids
    assert len(daemon.networks) == 2


def test_up_recreates_a_changed_service(fake: tuple[FakeNyxd, str], project_dir: Path) -> None:
    daemon, sock = fake
    assert run(sock, "up", "-d").exit_code == 0
    old = daemon.by_name("mystack-web-1")["id"]
    keep = daemon.by_name("mystack-backend-1")["id"]
    (project_dir / "compose.yaml").write_text(TWO_TIER.replace("8080:80", "8081:80"))
    result = run(sock, "up", "-d")
    assert result.exit_code == 0, result.output
    assert "Container mystack-web-1  Recreate" in result.output
    assert daemon.by_name("mystack-web-1")["id"] != old
    assert daemon.by_name("mystack-backend-1")["id"] == keep
    assert ("DELETE", f"/v1/containers/{old}?force=1", None) in daemon.requests


def test_up_existing_network_with_other_internal_flag_is_an_error(
    fake: tuple[FakeNyxd, str], project_dir: Path
) -> None:
    daemon, sock = fake
    daemon.networks["mystack_back"] = {"name": "mystack_back", "internal": False}
    result = run(sock, "up", "-d")
    assert result.exit_code == 1
    assert "network mystack_back exists with internal=False" in result.output
    assert daemon.calls("POST", "/v1/containers") == []


OPTIONED = """
services:
  web: {image: busybox:nyx, networks: [front]}
networks:
  front:
    driver_opts: {mtu: 1400, com.docker.network.bridge.name: br-front}
    labels: [team=web]
    ipam:
      config:
        - {subnet: 10.89.40.0/24, gateway: 10.89.40.254}
"""


def test_up_passes_driver_opts_labels_and_ipam_to_nyxd(
    fake: tuple[FakeNyxd, str], project_dir: Path
) -> None:
    daemon, sock = fake
    (project_dir / "compose.yaml").write_text(OPTIONED)
    result = run(sock, "up", "-d")
    assert result.exit_code == 0, result.output
    assert [r[2] for r in daemon.calls("POST", "/v1/networks")] == [
        {
            "name": "mystack_front",
            "internal": False,
            "options": {"mtu": "1400", "com.docker.network.bridge.name": "br-front"},
            "labels": {"team": "web"},
            "subnet": "10.89.40.0/24",
            "gateway": "10.89.40.254",
        }
    ]
    again = run(sock, "up", "-d")
    assert again.exit_code == 0 and "Network mystack_front  Exists" in again.output
    # the file changed, the network did not: an error before any container changes
    (project_dir / "compose.yaml").write_text(OPTIONED.replace("mtu: 1400", "mtu: 9000"))
    changed = run(sock, "up", "-d")
    assert changed.exit_code == 1
    assert "network mystack_front exists with options=" in changed.output
    assert "'mtu': '9000'" in changed.output and "compose down" in changed.output


def test_up_driver_refusal_is_one_line_and_creates_nothing(
    fake: tuple[FakeNyxd, str], project_dir: Path
) -> None:
    daemon, sock = fake
    daemon.fail[("POST", "/v1/networks")] = (
        400,
        "network 'mystack_front': unknown driver option(s) vlan",
    )
    (project_dir / "compose.yaml").write_text(OPTIONED.replace("mtu: 1400", "vlan: 7"))
    result = run(sock, "up", "-d")
    assert result.exit_code == 1
    assert "unknown driver option(s) vlan" in result.output
    assert daemon.calls("POST", "/v1/containers") == [] and daemon.networks == {}


def test_up_daemon_error_is_one_line_and_undone(
    fake: tuple[FakeNyxd, str], project_dir: Path
) -> None:
    daemon, sock = fake
    daemon.fail[("POST", "/v1/containers")] = (404, "image 'busybox' not found")
    result = run(sock, "up", "-d")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[-1].strip() == "Network mystack_front  Removed"
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: service backend: image 'busybox' not found"
    )
    assert "Traceback" not in result.output, result.output
    assert daemon.networks == {}


def test_up_failing_half_way_removes_what_it_created_only(
    fake: tuple[FakeNyxd, str], project_dir: Path
) -> None:
    daemon, sock = fake
    daemon.networks["mystack_front"] = {"name": "mystack_front", "internal": False}
    daemon.fail_create["mystack-web-1"] = (409, "port 8080/tcp is already published")
    result = run(sock, "up", "-d")
    assert result.exit_code == 1
    assert "Error: service web: port 8080/tcp is already published" in result.stderr
    assert "Container mystack-backend-1  Removed" in result.stdout
    assert daemon.containers == []
    assert set(daemon.networks) == {"mystack_front"}  # it existed before: left alone


def test_up_foreground_prints_prefixed_logs_until_containers_end(
    fake: tuple[FakeNyxd, str], project_dir: Path
) -> None:
    daemon, sock = fake
    daemon.logs = {"mystack-web-1": ["serving"], "mystack-backend-1": ["ready", "done"]}
    result = run(sock, "up")
    assert result.exit_code == 0, result.output
    assert "backend-1  | ready" in result.output
    assert "backend-1  | done" in result.output
    assert "web-1      | serving" in result.output
    follows = [r[1] for r in daemon.calls("GET") if r[1].endswith("/logs?follow=1")]
    assert len(follows) == 2


def test_up_foreground_sigterm_stops_the_stack(
    fake: tuple[FakeNyxd, str], project_dir: Path
) -> None:
    daemon, sock = fake
    daemon.hold_follow.clear()

    class NotHandled(Exception):
        pass

    def guard(signum: int, frame: Any) -> None:
        raise NotHandled("nyx compose up did not install its SIGTERM handler")

    previous = signal.signal(signal.SIGTERM, guard)

    def terminate() -> None:
        daemon.following.wait(10)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=terminate, daemon=True)
    try:
        killer.start()
        result = run(sock, "up")
    finally:
        killer.join(10)
        daemon.hold_follow.set()
        assert signal.getsignal(signal.SIGTERM) is guard
        signal.signal(signal.SIGTERM, previous)
    assert result.exit_code == 0, result.output
    stops = [r[1] for r in daemon.calls("POST") if r[1].endswith("/stop")]
    web = daemon.by_name("mystack-web-1")["id"]
    backend = daemon.by_name("mystack-backend-1")["id"]
    assert stops == [f"/v1/containers/{web}/stop", f"/v1/containers/{backend}/stop"]
    assert all(c["state"] == "exited" for c in daemon.containers)


def test_up_foreground_second_signal_kills(fake: tuple[FakeNyxd, str], project_dir: Path) -> None:
    daemon, sock = fake
    daemon.hold_follow.clear()
    daemon.stop_gate = gate = threading.Event()

    def guard(signum: int, frame: Any) -> None:
        raise AssertionError("nyx compose up did not install its SIGTERM handler")

    previous = signal.signal(signal.SIGTERM, guard)

    def terminate_twice() -> None:
        daemon.following.wait(10)
        os.kill(os.getpid(), signal.SIGTERM)
        daemon.stopping.wait(10)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=terminate_twice, daemon=True)
    try:
        killer.start()
        result = run(sock, "up")
    finally:
        killer.join(10)
        gate.set()
        daemon.hold_follow.set()
        signal.signal(signal.SIGTERM, previous)
    assert result.exit_code == 0, result.output
    assert "Killing..." in result.stderr
    web = daemon.by_name("mystack-web-1")["id"]
    backend = daemon.by_name("mystack-backend-1")["id"]
    stops = [r[1] for r in daemon.calls("POST") if "/stop" in r[1]]
    assert stops == [
        f"/v1/containers/{web}/stop",
        f"/v1/containers/{web}/stop?timeout=0",
        f"/v1/containers/{backend}/stop?timeout=0",
    ]


def test_restart_policies_are_nyxd_s_and_up_recreates_nothing(
    fake: tuple[FakeNyxd, str], project_dir: Path
) -> None:
    """``restart:`` goes to nyxd in the spec; a foreground ``up`` only follows the logs."""
    daemon, sock = fake
    (project_dir / "compose.yaml").write_text(
        TWO_TIER.replace(
            "    image: busybox\n    networks:",
            "    image: busybox\n    restart: always\n    networks:",
        ).replace(
            "    depends_on: [backend]", "    depends_on: [backend]\n    restart: on-failure:2"
        )
    )
    daemon.exits = {"mystack-backend-1": [1], "mystack-web-1": [1]}
    daemon.logs = {"mystack-backend-1": ["try"]}
    result = run(sock, "up")
    assert result.exit_code == 0, result.output
    created = [r[2] for r in daemon.calls("POST", "/v1/containers") if r[2]]
    assert [(b["name"], b["restart"]) for b in created] == [
        ("mystack-backend-1", "always"),
        ("mystack-web-1", "on-failure:2"),
    ]
    assert "Restarting" not in result.stdout
    assert len(daemon.containers) == 2 and daemon.calls("DELETE") == []


HEALTHY_STACK = """services:
  db:
    image: busybox
    healthcheck: {test: "pg_isready", interval: 1s, retries: 2}
  migrate:
    image: busybox
    depends_on: {db: {condition: service_healthy}}
  web:
    image: busybox
    depends_on:
      db: {condition: service_healthy}
      migrate: {condition: service_completed_successfully}
"""


def _unhealthy(output: str) -> dict[str, Any]:
    log = [{"start": "t", "end": "t", "exit_code": 1, "output": output}]
    return {"health": {"status": "unhealthy", "failing_streak": 2, "log": log}}


def test_up_waits_for_healthy_and_completed_dependencies(
    fake: tuple[FakeNyxd, str], project_dir: Path
) -> None:
    daemon, sock = fake
    (project_dir / "compose.yaml").write_text(HEALTHY_STACK)
    starting = {"health": {"status": "starting", "failing_streak": 0, "log": []}}
    healthy = {"health": {"status": "healthy", "failing_streak": 0, "log": []}}
    daemon.progress = {
        "mystack-db-1": [starting, starting, healthy],
        "mystack-migrate-1": [{}, {"state": "exited", "exit_code": 0}],
    }
    result = run(sock, "up", "-d")
    assert result.exit_code == 0, result.output
    events = [r for r in daemon.requests if r[0] == "POST" and r[1] == "/v1/containers"]
    gets = [r[1] for r in daemon.requests if r[0] == "GET" and r[1].count("/") == 3]
    # db was asked three times before migrate was created, migrate twice before web
    order = [
        r[2]["name"] if r[0] == "POST" else r[1]
        for r in daemon.requests
        if (r[0] == "POST" and r[1] == "/v1/containers") or r in [("GET", g, None) for g in gets]
    ]
    db, migrate = (c["id"] for c in daemon.containers[:2])
    assert order == [
        "mystack-db-1",
        f"/v1/containers/{db}",
        f"/v1/containers/{db}",
        f"/v1/containers/{db}",
        "mystack-migrate-1",
        f"/v1/containers/{db}",
        f"/v1/containers/{migrate}",
        f"/v1/containers/{migrate}",
        "mystack-web-1",
    ]
    assert len(events) == 3
    assert "Container mystack-db-1  Waiting" in result.stdout
    assert "Container mystack-db-1  Healthy" in result.stdout
    assert "Container mystack-migrate-1  Exited" in result.stdout
    assert events[0][2]["healthcheck"] == {
        "test": ["CMD-SHELL", "pg_isready"],
        "interval": 1.0,
        "retries": 2,
    }


@pytest.mark.parametrize(
    ("progress", "message"),
    [
        (
            {"mystack-db-1": [_unhealthy("no response\n")]},
            "service migrate needs db healthy: mystack-db-1 is unhealthy "
            "(last probe: 'no response')",
        ),
        (
            {"mystack-db-1": [{"state": "exited", "exit_code": 3}]},
            "service migrate needs db healthy: mystack-db-1 exited with exit code 3 before it "
            "was healthy",
        ),
        (
            {
                "mystack-db-1": [{"health": {"status": "healthy"}}] * 9,
                "mystack-migrate-1": [{"state": "exited", "exit_code": 2}],
            },
            "service web needs migrate completed successfully: mystack-migrate-1 exited with "
            "exit code 2",
        ),
        (
            {"mystack-db-1": [{"health": None}]},
            "service migrate needs db healthy, but mystack-db-1 has no healthcheck",
        ),
    ],
    ids=["unhealthy", "db-exited", "migrate-failed", "no-healthcheck"],
)
def test_a_dependency_that_fails_its_condition_fails_up_and_undoes_it(
    fake: tuple[FakeNyxd, str], project_dir: Path, progress: Any, message: str
) -> None:
    daemon, sock = fake
    (project_dir / "compose.yaml").write_text(HEALTHY_STACK)
    daemon.progress = progress
    result = run(sock, "up", "-d")
    assert result.exit_code == 1
    assert message in result.stderr, result.stderr
    assert daemon.containers == [] and daemon.networks == {}  # undone


def test_up_gives_up_waiting_after_the_wait_timeout(
    fake: tuple[FakeNyxd, str], project_dir: Path
) -> None:
    daemon, sock = fake
    (project_dir / "compose.yaml").write_text(HEALTHY_STACK)
    result = run(sock, "up", "-d", "--wait-timeout", "0")
    assert result.exit_code == 1
    assert (
        "service migrate needs db healthy: gave up after 0s (it is running, health starting); "
        "see `nyx compose logs db`, or raise --wait-timeout"
    ) in result.stderr
    assert daemon.containers == []


def test_up_with_a_single_network_driver_refuses_two_networks_per_service(
    fake: tuple[FakeNyxd, str], project_dir: Path
) -> None:
    daemon, sock = fake
    daemon.driver = "cni"
    result = run(sock, "up", "-d")
    assert result.exit_code == 1
    assert "services.web.networks: nyxd's net driver 'cni' attaches a container to one network" in (
        result.stderr
    )
    assert "web lists 2 (front, back)" in result.stderr
    assert daemon.networks == {} and daemon.containers == []
    (project_dir / "compose.yaml").write_text(TWO_TIER.replace("[front, back]", "[back]"))
    ok = run(sock, "up", "-d")
    assert ok.exit_code == 0, ok.output
    assert "warning: networks.back.internal: not enforced by nyxd's net driver 'cni'" in ok.stderr


# ---------------------------------------------------------------- down


def test_down_removes_containers_in_reverse_order_and_networks(
    fake: tuple[FakeNyxd, str], project_dir: Path
) -> None:
    daemon, sock = fake
    assert run(sock, "up", "-d").exit_code == 0
    other = {"name": "other_default", "internal": False}
    daemon.networks["other_default"] = other
    web = daemon.by_name("mystack-web-1")["id"]
    backend = daemon.by_name("mystack-backend-1")["id"]
    daemon.requests.clear()
    result = run(sock, "down")
    assert result.exit_code == 0, result.output
    deletes = [r[1] for r in daemon.calls("DELETE")]
    assert deletes == [
        f"/v1/containers/{web}?force=1",
        f"/v1/containers/{backend}?force=1",
        "/v1/networks/mystack_front",
        "/v1/networks/mystack_back",
    ]
    stops = [r[1] for r in daemon.calls("POST")]
    assert stops == [f"/v1/containers/{web}/stop", f"/v1/containers/{backend}/stop"]
    assert daemon.containers == []
    assert daemon.networks == {"other_default": other}
    # idempotent: a second down finds nothing and succeeds
    again = run(sock, "down")
    assert again.exit_code == 0, again.output


def test_down_timeout_is_passed_to_stop(fake: tuple[FakeNyxd, str], project_dir: Path) -> None:
    daemon, sock = fake
    assert run(sock, "up", "-d").exit_code == 0
    web = daemon.by_name("mystack-web-1")["id"]
    result = run(sock, "down", "-t", "0.5")
    assert result.exit_code == 0, result.output
    assert ("POST", f"/v1/containers/{web}/stop?timeout=0.5", None) in daemon.requests
    bad = run(sock, "down", "-t", "-1")
    assert bad.exit_code == 2


def test_down_without_file_uses_project_name(
    fake: tuple[FakeNyxd, str], project_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon, sock = fake
    (project_dir / "compose.yaml").write_text("services: {a: {image: x}}")
    assert run(sock, "up", "-d").exit_code == 0
    assert set(daemon.networks) == {"mystack_default"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = run(sock, "-p", "mystack", "down")
    assert result.exit_code == 0, result.output
    assert daemon.containers == [] and daemon.networks == {}


def test_down_reports_every_failure_and_goes_on(
    fake: tuple[FakeNyxd, str], project_dir: Path
) -> None:
    daemon, sock = fake
    assert run(sock, "up", "-d").exit_code == 0
    web = daemon.by_name("mystack-web-1")["id"]
    daemon.fail[("DELETE", f"/v1/containers/{web}")] = (500, "runc exploded")
    result = run(sock, "down")
    assert result.exit_code == 1
    assert "container mystack-web-1: runc exploded" in result.output
    assert "network mystack_front: network mystack_front in use" in result.output
    # the rest was still removed
    assert [c["name"] for c in daemon.containers] == ["mystack-web-1"]
    assert "mystack_back" in daemon.networks  # still used by web
    del daemon.fail[("DELETE", f"/v1/containers/{web}")]
    assert run(sock, "down").exit_code == 0
    assert daemon.containers == [] and daemon.networks == {}


# ---------------------------------------------------------------- ps / logs


def test_ps_lists_the_stack_only(fake: tuple[FakeNyxd, str], project_dir: Path) -> None:
    daemon, sock = fake
    assert run(sock, "up", "-d").exit_code == 0
    daemon.containers.append(
        {
            "id": "x1",
            "name": "stranger",
            "state": "running",
            "labels": {},
            "spec": {"networks": []},
        }
    )
    result = run(sock, "ps")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["NAME", "SERVICE", "STATUS", "RESTARTS", "IPS", "PORTS"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {"mystack-backend-1", "mystack-web-1"}
    assert rows["mystack-web-1"][1:4] == ["web", "Up", "0"]
    assert rows["mystack-web-1"][-1] == "8080:80/tcp"


def test_logs_prefixed_and_filtered(fake: tuple[FakeNyxd, str], project_dir: Path) -> None:
    daemon, sock = fake
    assert run(sock, "up", "-d").exit_code == 0
    daemon.logs = {"mystack-web-1": ["w1", "w2"], "mystack-backend-1": ["b1"]}
    all_logs = run(sock, "logs")
    assert all_logs.exit_code == 0, all_logs.output
    assert all_logs.output.splitlines() == [
        "backend-1  | b1",
        "web-1      | w1",
        "web-1      | w2",
    ]
    web_only = run(sock, "logs", "web")
    assert web_only.output.splitlines() == ["web-1  | w1", "web-1  | w2"]
    followed = run(sock, "logs", "-f", "backend")
    assert followed.output.splitlines() == ["backend-1  | b1"]
    assert any(r[1].endswith("/logs?follow=1") for r in daemon.calls("GET"))
    unknown = run(sock, "logs", "nope")
    assert unknown.exit_code == 1
    assert "no such service: nope (services: backend, web)" in unknown.output


# ---------------------------------------------------------------- files, names, errors


def test_invalid_file_is_one_line_naming_path_and_value(
    fake: tuple[FakeNyxd, str], project_dir: Path
) -> None:
    daemon, sock = fake
    (project_dir / "compose.yaml").write_text(TWO_TIER.replace('"8080:80"', '"8080:99999"'))
    result = run(sock, "up", "-d")
    assert result.exit_code == 1
    assert "compose.yaml: services.web.ports[0]:" in result.output
    assert "99999" in result.output
    assert daemon.requests == []


def test_invalid_yaml(fake: tuple[FakeNyxd, str], project_dir: Path) -> None:
    _, sock = fake
    (project_dir / "compose.yaml").write_text("services: [a\n")
    result = run(sock, "up", "-d")
    assert result.exit_code == 1
    assert "compose.yaml: invalid YAML" in result.output


def test_cycle_is_an_error(fake: tuple[FakeNyxd, str], project_dir: Path) -> None:
    daemon, sock = fake
    (project_dir / "compose.yaml").write_text(
        "services: {a: {image: x, depends_on: [b]}, b: {image: x, depends_on: [a]}}"
    )
    result = run(sock, "up", "-d")
    assert result.exit_code == 1
    assert "dependency cycle a -> b -> a" in result.output
    assert daemon.requests == []


def test_warnings_go_to_stderr(fake: tuple[FakeNyxd, str], project_dir: Path) -> None:
    _, sock = fake
    (project_dir / "compose.yaml").write_text(
        TWO_TIER.replace("image: busybox\n    command", "image: x\n    logging: {}\n    command")
    )
    result = run(sock, "up", "-d")
    assert result.exit_code == 0
    assert "compose.yaml: services.web.logging: nyxd keeps every" in result.stderr
    assert result.stderr.startswith("warning: ")
    assert "warning" not in result.stdout


def test_file_option_project_option_and_env(
    fake: tuple[FakeNyxd, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon, sock = fake
    monkeypatch.delenv("COMPOSE_PROJECT_NAME", raising=False)
    monkeypatch.setenv("WEB_PORT", "9090")
    d = tmp_path / "stack"
    d.mkdir()
    (d / ".env").write_text("# comment\nIMAGE='busybox:1'\nWEB_PORT=1\n")
    f = d / "other.yml"
    f.write_text("services:\n  web:\n    image: ${IMAGE}\n    ports: ['${WEB_PORT}:80']\n")
    monkeypatch.chdir(tmp_path)
    result = run(sock, "-f", str(f), "-p", "demo", "up", "-d")
    assert result.exit_code == 0, result.output
    c = daemon.by_name("demo-web-1")
    assert c["spec"]["image"] == "busybox:1"
    assert c["spec"]["ports"][0]["host_port"] == 9090  # the shell beats .env
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", "fromenv")
    assert run(sock, "-f", str(f), "up", "-d").exit_code == 0
    assert daemon.by_name("fromenv-web-1")
    bad = run(sock, "-p", "Bad!", "-f", str(f), "up", "-d")
    assert bad.exit_code == 1 and "project name 'Bad!'" in bad.output


def test_default_file_names_in_order(
    fake: tuple[FakeNyxd, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon, sock = fake
    monkeypatch.delenv("COMPOSE_PROJECT_NAME", raising=False)
    monkeypatch.chdir(tmp_path)
    missing = run(sock, "up", "-d")
    assert missing.exit_code == 1
    assert "no compose file in" in missing.output and "docker-compose.yml" in missing.output
    (tmp_path / "docker-compose.yml").write_text("services: {old: {image: x}}")
    (tmp_path / "compose.yml").write_text("services: {new: {image: x}}")
    assert run(sock, "-p", "p", "up", "-d").exit_code == 0
    assert [c["name"] for c in daemon.containers] == ["p-new-1"]
    gone = run(sock, "-f", "absent.yaml", "up", "-d")
    assert gone.exit_code == 1 and "compose file 'absent.yaml' not found" in gone.output


def test_no_daemon_is_one_clear_line(project_dir: Path, tmp_path: Path) -> None:
    result = run(str(tmp_path / "missing.sock"), "up", "-d")
    assert result.exit_code == 1
    assert "cannot connect to nyxd at" in result.output
    assert "is nyxd running?" in result.output


def test_socket_from_env_and_parent_context(
    fake: tuple[FakeNyxd, str], project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon, sock = fake
    monkeypatch.setenv("NYXD_SOCKET", sock)
    assert CliRunner().invoke(compose, ["ps"]).exit_code == 0
    monkeypatch.delenv("NYXD_SOCKET")

    @click.group()
    @click.option("--socket", default=None)
    @click.pass_context
    def nyx(ctx: click.Context, socket: str | None) -> None:
        ctx.obj = {"socket": socket}

    nyx.add_command(compose)
    result = CliRunner().invoke(nyx, ["--socket", sock, "compose", "up", "-d"])
    assert result.exit_code == 0, result.output
    assert len(daemon.containers) == 2


def test_yaml_reads_like_compose() -> None:
    data = load_yaml("p: [22:22, 80, '1:2']\nr: no\nd: 2024-01-01\nb: true\nn: 0x10", "x")
    assert data == {"p": ["22:22", 80, "1:2"], "r": "no", "d": "2024-01-01", "b": True, "n": 16}


def test_yaml_anchors_and_merge_keys() -> None:
    data = load_yaml(
        "x-base: &base {image: busybox, restart: no}\n"
        "services:\n  a:\n    <<: *base\n    command: echo a\n",
        "x",
    )
    assert data["services"]["a"] == {"image": "busybox", "restart": "no", "command": "echo a"}


def test_config_prints_the_normalized_file_without_a_daemon(
    project_dir: Path, tmp_path: Path
) -> None:
    result = run(str(tmp_path / "no-daemon.sock"), "config")
    assert result.exit_code == 0, result.output
    data = load_yaml(result.stdout, "config")
    assert data["name"] == "mystack"
    assert list(data["services"]) == ["backend", "web"]
    assert data["services"]["web"]["ports"] == ["8080:80/tcp"]
    assert data["services"]["web"]["command"] == ["httpd", "-f", "-p", "80"]
    assert data["services"]["web"]["networks"] == {"front": None, "back": None}
    assert data["services"]["backend"]["networks"] == {"back": {"aliases": ["api"]}}
    assert data["services"]["backend"]["x-nyx-container-name"] == "mystack-backend-1"
    assert data["networks"]["back"] == {"name": "mystack_back", "internal": True}
    quiet = run(str(tmp_path / "no-daemon.sock"), "config", "-q")
    assert quiet.exit_code == 0 and quiet.output == ""
    (project_dir / "compose.yaml").write_text("services: {a: {image: x, restart: sometimes}}")
    bad = run(str(tmp_path / "no-daemon.sock"), "config", "-q")
    assert bad.exit_code == 1
    assert "services.a.restart: restart policy 'sometimes' is not one of" in bad.output


def test_config_shows_restart_healthcheck_and_conditions_and_reads_back(
    project_dir: Path, tmp_path: Path
) -> None:
    (project_dir / "compose.yaml").write_text(
        HEALTHY_STACK.replace("    image: busybox\n    depends_on: {db", "    image: busybox\n"
        "    restart: unless-stopped\n    healthcheck: {disable: true}\n    depends_on: {db")
    )  # fmt: skip
    first = run(str(tmp_path / "no-daemon.sock"), "config")
    assert first.exit_code == 0, first.output
    data = load_yaml(first.stdout, "config")
    db, migrate, web = (data["services"][s] for s in ("db", "migrate", "web"))
    assert db["healthcheck"] == {
        "test": ["CMD-SHELL", "pg_isready"],
        "interval": "1s",
        "retries": 2,
    }
    assert db["restart"] == "no"
    assert migrate["restart"] == "unless-stopped" and migrate["healthcheck"] == {"disable": True}
    assert web["depends_on"] == {
        "db": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    (project_dir / "compose.yaml").write_text(first.stdout)
    second = run(str(tmp_path / "no-daemon.sock"), "config")
    assert second.stdout == first.stdout and second.stderr == ""


def test_config_output_reads_back_as_the_same_file(tmp_path: Path) -> None:
    example = Path(__file__).parents[3] / "examples" / "compose" / "compose.yaml"
    first = CliRunner().invoke(compose, ["-f", str(example), "config"], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "$$BACKEND_URL" in first.stdout and "- |" in first.stdout
    again = tmp_path / "again.yaml"
    again.write_text(first.stdout)
    second = CliRunner().invoke(compose, ["-f", str(again), "config"], catch_exceptions=False)
    assert second.exit_code == 0, second.output
    assert second.stdout == first.stdout
    assert second.stderr == ""  # no warnings: the output is a plain compose file
