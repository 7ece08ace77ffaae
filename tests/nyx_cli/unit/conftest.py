"""A fake supervisor behind the real API server on a temporary unix socket."""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from nyx_cli.daemon._api import ApiServer
from nyx_cli.daemon._models import ContainerSpec
from nyx_cli.errors import CommandError, ConflictError, NotFoundError, NotImplementedYet
from nyx_core.errors import ConfigError


class FakeSupervisor:
    def __init__(self, tmp: Path) -> None:
        self.settings = SimpleNamespace(state_dir=tmp / "state")
        self.containers: dict[str, dict[str, Any]] = {}
        self.specs: dict[str, ContainerSpec] = {}
        self.loaded: list[bytes] = []
        self.load_modes: list[tuple[int, int]] = []  # (file, its directory) during a load
        self.fail_load: Exception | None = None
        self.stopped: list[tuple[str, float | None]] = []
        self.exit_code = 0
        self.exited = threading.Event()
        self.cannot_reload = False
        self.pull_available = True
        self.fail_start: Exception | None = None
        self.log = b"line one\nline two\n"
        self.networks: dict[str, dict[str, Any]] = {}
        self.network_calls: list[tuple[Any, ...]] = []

    def info(self) -> dict[str, Any]:
        return {
            "version": "0.1.0",
            "driver": "fake",
            "dns": "auto",
            "plugins": [],
            "containers": len(self.containers),
            "images": 1,
        }

    def list_containers(
        self, all: bool = False, labels: dict[str, str | None] | None = None
    ) -> list[dict[str, Any]]:
        out = [c for c in self.containers.values() if all or c["state"] == "running"]
        for k, v in (labels or {}).items():
            out = [c for c in out if k in c["labels"] and (v is None or c["labels"][k] == v)]
        return out

    def create(self, spec: ContainerSpec, start: bool = True) -> dict[str, Any]:
        if spec.image != "busybox:nyx":
            raise NotFoundError(f"no such image: {spec.image}")
        if spec.name and any(c["name"] == spec.name for c in self.containers.values()):
            raise ConflictError(f"container name {spec.name!r} is already in use")
        cid = f"{len(self.containers) + 1:064x}"
        self.specs[cid] = spec
        self.containers[cid] = {
            "id": cid,
            "name": spec.name or f"nyx-{cid[:8]}",
            "image": spec.image,
            "state": "created",
            "pid": None,
            "exit_code": None,
            "hostname": spec.hostname,
            "ips": [],
            "ports": [str(p) for p in spec.ports],
            "expose": list(spec.expose),
            "networks": ["nyx"],
            "labels": spec.labels,
            "created": "now",
            "started": None,
            "finished": None,
        }
        if start:
            return self.start(cid)
        return self.containers[cid]

    def _find(self, ref: str) -> dict[str, Any]:
        for c in self.containers.values():
            if ref in (c["id"], c["name"]) or c["id"].startswith(ref):
                return c
        raise NotFoundError(f"no such container: {ref}")

    def get(self, ref: str) -> dict[str, Any]:
        return self._find(ref)

    def start(self, ref: str) -> dict[str, Any]:
        c = self._find(ref)
        if self.fail_start is not None:
            raise self.fail_start
        c.update(state="running", pid=4242, ips=["10.231.0.2"])
        return c

    def stop(self, ref: str, timeout: float | None = None) -> dict[str, Any]:
        c = self._find(ref)
        self.stopped.append((c["id"], timeout))
        c.update(state="stopped", exit_code=137)
        self.exited.set()
        return c

    def remove(self, ref: str, force: bool = False) -> None:
        c = self._find(ref)
        if c["state"] == "running" and not force:
            raise ConflictError(f"container {c['name']!r} is running")
        del self.containers[c["id"]]

    def wait(self, ref: str, timeout: float | None = None) -> dict[str, Any]:
        c = self._find(ref)
        if c["state"] == "running":
            self.exited.wait(10)
            if c["state"] == "running":
                c.update(state="exited", exit_code=self.exit_code)
        return {"exit_code": c["exit_code"], "state": c["state"]}

    def logs(self, ref: str, follow: bool = False) -> Iterator[bytes]:
        self._find(ref)  # eager, as the supervisor's
        return iter(self.log.splitlines(keepends=True))

    def list_images(self) -> list[dict[str, Any]]:
        return [{"id": "sha256:" + "ab" * 32, "repo_tags": ["busybox:nyx"], "size": 2150400}]

    def load_image(self, path: Path) -> list[dict[str, Any]]:
        path = Path(path)
        if path.is_file():
            self.load_modes.append((path.stat().st_mode, path.parent.stat().st_mode))
        self.loaded.append(path.read_bytes() if path.is_file() else str(path).encode())
        if self.fail_load is not None:
            raise self.fail_load
        return [{"id": "sha256:" + "cd" * 32, "repo_tags": ["loaded:1"]}]

    def pull_image(
        self, reference: str, insecure: bool = False, progress: Callable[..., Any] | None = None
    ) -> dict[str, Any]:
        if not self.pull_available:
            raise NotImplementedYet("image pull is not available: the registry module is missing")
        if progress:
            progress({"kind": "resolve", "reference": reference})
            progress({"kind": "done", "reference": reference})
        return {"id": "sha256:" + "ef" * 32, "repo_tags": [reference], "insecure": insecure}

    def remove_image(self, ref: str) -> None:
        if ref != "busybox:nyx":
            raise NotFoundError(f"no such image: {ref}")

    def list_networks(self) -> list[dict[str, Any]]:
        return [
            {
                "name": "nyx",
                "subnet": "10.88.0.0/16",
                "gateway": "10.88.0.1/16",
                "internal": False,
                "default": True,
                "driver": "fake",
                "interface": "nyx0",
                "options": {},
                "labels": {},
            },
            *self.networks.values(),
        ]

    def get_network(self, name: str) -> dict[str, Any]:
        for net in self.list_networks():
            if net["name"] == name:
                return net
        raise NotFoundError(f"no such network: {name}")

    def create_network(
        self,
        name: str,
        internal: bool = False,
        subnet: str | None = None,
        gateway: str | None = None,
        options: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        ipv6: bool = False,
        subnet6: str | None = None,
        gateway6: str | None = None,
    ) -> dict[str, Any]:
        self.network_calls.append(
            ("create", name, internal, subnet, gateway, dict(options or {}), dict(labels or {}))
        )
        if ipv6 or subnet6 or gateway6:
            self.network_calls.append(("create6", name, ipv6, subnet6, gateway6))
        if name == "nyx" or name in self.networks:
            raise ConflictError(f"network {name!r} already exists")
        if "vlan" in (options or {}):
            raise ConfigError(f"network {name!r}: unknown driver option(s) vlan")
        self.networks[name] = {
            "name": name,
            "subnet": subnet or "10.89.0.0/24",
            "gateway": f"{gateway or '10.89.0.1'}/24",
            "internal": internal,
            "default": False,
            "driver": "fake",
            "interface": f"br-{name}",
            "options": dict(options or {}),
            "labels": dict(labels or {}),
        }
        return self.networks[name]

    def reload_networks(self) -> dict[str, Any]:
        self.network_calls.append(("reload", ""))
        if self.cannot_reload:
            from nyx_cli.errors import NotImplementedYet

            raise NotImplementedYet(
                "net driver 'fake' cannot reload (it has no nyx_backend_reload)"
            )
        return {"driver": "fake", "report": {"networks": sorted(self.networks)}}

    def remove_network(self, name: str) -> None:
        self.network_calls.append(("remove", name))
        if name == "back":
            raise ConflictError(f"network {name!r} is in use by web")
        if self.networks.pop(name, None) is None:
            raise NotFoundError(f"no such network: {name}")


@pytest.fixture
def fake_sup(tmp_path: Path) -> FakeSupervisor:
    return FakeSupervisor(tmp_path)


@pytest.fixture
def api(tmp_path: Path, fake_sup: FakeSupervisor) -> Iterator[Path]:
    sock = tmp_path / "run" / "nyxd.sock"
    server = ApiServer(sock, fake_sup)
    server.start()
    try:
        yield sock
    finally:
        server.close()


@pytest.fixture
def make_api(tmp_path: Path, fake_sup: FakeSupervisor) -> Iterator[Callable[..., Path]]:
    """An API server whose supervisor settings have these ``api_*`` values (nyxd's way)."""
    servers: list[ApiServer] = []

    def make(sock: Path | None = None, **settings: Any) -> Path:
        for name, value in settings.items():
            setattr(fake_sup.settings, name, value)
        sock = sock or tmp_path / "run" / f"nyxd{len(servers)}.sock"
        server = ApiServer(sock, fake_sup)
        server.start()
        servers.append(server)
        return sock

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def open_socket_dir() -> Iterator[Path]:
    """A directory every user may reach (tmp_path is root's alone)."""
    d = Path(tempfile.mkdtemp(prefix="nyx-api-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


__all__ = ["CommandError", "FakeSupervisor"]
