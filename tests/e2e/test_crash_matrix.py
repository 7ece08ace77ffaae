"""The crash matrix: nyxd killed with SIGKILL at every step, then restarted.

Each case arms one test-only fault point (``NYXD_TEST_FAULTS``, honoured only with
``NYXD_TEST_MODE=1``; see nyx_cli/_faults.py), runs the operation that reaches it (nyxd
dies there), restarts nyxd without faults, and checks that the host holds exactly what the
surviving containers and the networks account for (:func:`nyxd_e2e_kit.accounting`: links,
addresses, routes, nft elements, leases, mounts, cgroups, runc states, DNS records, files,
no staging directory). Then the interrupted operation is done again, to show nyxd still
works, and undone. A bystander container with a published port runs through every case:
it must be re-adopted each time (nyxd's mounts survive the kill, as on a real host).

``nyx compose up`` and ``down`` are client-side sequences of requests: nyxd is killed
before each of their requests in turn (a proxy on the control socket counts them).
"""

from __future__ import annotations

import contextlib
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from nyxd_e2e_kit import ROOT, Nyxd, assert_accounted

from nyx_core.testing import HostTopology

pytestmark = [pytest.mark.e2e, pytest.mark.kernel]

NAMES = ["keeper", "victim", "crashweb", "crashdb"]
SLEEP = ["sleep", "1000"]
REGISTRY = "127.0.0.1:5000"
PULLED = f"{REGISTRY}/crash/tiny:v1"


def _tiny_image(out: Path, tag: str, salt: str) -> None:
    """A two-layer image of a few bytes (its own layers: nothing shared with busybox)."""
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import busybox_image as bi
    finally:
        sys.path.pop(0)
    layers = [
        bi.layer_tar([bi.Entry("one.txt", data=f"one {salt}\n".encode())]),
        bi.layer_tar([bi.Entry("two.txt", data=f"two {salt}\n".encode())]),
    ]
    diff_ids = ["sha256:" + bi._sha(layer) for layer in layers]
    bi.write_docker_archive(out, layers, bi.image_config(diff_ids), [tag])


@pytest.fixture(scope="module")
def crash(busybox_tar: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nyxd]:
    """One nyxd (shared mount namespace) with busybox, network ``crashnet`` (internal) and
    the bystander ``keeper`` running, for every case of the module."""
    root = tmp_path_factory.mktemp("crash")
    topo = HostTopology.create()
    d = Nyxd(topo.host, root / "nyxd", 9, shared_mounts=True, topology=topo)
    d.root.mkdir()
    registry: subprocess.Popen[bytes] | None = None
    try:
        d.start()
        d.client.load(busybox_tar)
        d.client.request("POST", "/v1/networks", body={"name": "crashnet", "internal": True})
        keeper = {"image": "busybox:nyx", "name": "keeper", "command": SLEEP}
        d.client.create({**keeper, "ports": ["8090:80"]})
        _tiny_image(root / "tiny.tar", "crash/tiny:v1", "load")
        _tiny_image(root / "pushed.tar", PULLED, "pull")
        registry = _registry(d, root)
        yield d
    finally:
        if registry is not None:
            registry.terminate()
            registry.wait(10)
        try:
            d.stop()
        finally:
            d.force_cleanup()
            d.close()
            topo.delete()


def _registry(d: Nyxd, root: Path) -> subprocess.Popen[bytes] | None:
    """docker-registry on the host namespace's 127.0.0.1:5000 with the tiny image pushed."""
    binary = Path("/usr/bin/docker-registry")
    if not binary.exists() or shutil.which("skopeo") is None:
        return None
    (root / "registry").mkdir()
    config = root / "registry.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'registry'}\n"
        f"http:\n  addr: {REGISTRY}\n"
    )
    reg = subprocess.Popen(
        ["nsenter", f"--net={d.ns.path}", "--", str(binary), "serve", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while d.host("curl", "-s", "-m", "1", f"http://{REGISTRY}/v2/").returncode != 0:
        assert time.monotonic() < deadline, "registry did not start"
        time.sleep(0.1)
    push = d.host(
        "skopeo", "copy", "--dest-tls-verify=false", f"docker-archive:{root / 'pushed.tar'}",
        f"docker://{PULLED}", timeout=120,
    )  # fmt: skip
    assert push.returncode == 0, push.stderr
    return reg


def _quiet(call: Callable[[], Any]) -> None:
    """A request nyxd dies in the middle of: its error is expected."""
    with contextlib.suppress(Exception):
        call()


def _victim(d: Nyxd, start: bool = True) -> dict[str, Any]:
    spec = {
        "image": "busybox:nyx",
        "name": "victim",
        "command": SLEEP,
        "ports": ["8080:80", "127.0.0.1:8081:81/udp"],
        "networks": [{"name": "nyx"}, {"name": "crashnet"}],
        "sysctls": {"net.ipv4.ip_unprivileged_port_start": "80"},  # the sysctls step runs
    }
    return d.client.create(spec, start=start)  # type: ignore[no-any-return]


def _gone(d: Nyxd, ref: str) -> None:
    with contextlib.suppress(Exception):
        d.client.request("DELETE", f"/v1/containers/{ref}", params={"force": 1})


def _images(d: Nyxd) -> set[str]:
    return {t for i in d.client.request("GET", "/v1/images") for t in i["repo_tags"]}


def _networks(d: Nyxd) -> set[str]:
    return {n["name"] for n in d.client.request("GET", "/v1/networks")}


# ------------------------------------------------------------------ the operations


def op_run(d: Nyxd) -> None:
    _quiet(lambda: _victim(d))


def redo_run(d: Nyxd) -> None:
    _gone(d, "victim")
    c = _victim(d)
    assert c["state"] == "running" and len(c["ips"]) == 2
    assert_accounted(d, NAMES)
    _gone(d, "victim")


def op_stop(d: Nyxd) -> None:
    _victim(d)
    _quiet(lambda: d.client.stop("victim", timeout=1))


def op_exit(d: Nyxd) -> None:
    spec = {"image": "busybox:nyx", "name": "victim", "command": ["sh", "-c", "sleep 0.5"]}
    d.client.create({**spec, "networks": [{"name": "nyx"}, {"name": "crashnet"}]})
    _quiet(lambda: d.client.wait("victim"))


def op_rm(d: Nyxd) -> None:
    _victim(d)
    _quiet(lambda: _gone_strict(d))


def _gone_strict(d: Nyxd) -> None:
    d.client.request("DELETE", "/v1/containers/victim", params={"force": 1})


def op_load(d: Nyxd) -> None:
    _quiet(lambda: d.client.load(d.root.parent / "tiny.tar"))


def redo_load(d: Nyxd) -> None:
    loaded = d.client.load(d.root.parent / "tiny.tar")
    assert "crash/tiny:v1" in [t for i in loaded for t in i["repo_tags"]] or loaded
    assert_accounted(d, NAMES)
    d.client.request("DELETE", "/v1/images/crash/tiny:v1")


def op_pull(d: Nyxd) -> None:
    _quiet(lambda: d.client.request("POST", "/v1/images/pull", body={"reference": PULLED}))


def redo_pull(d: Nyxd) -> None:
    d.client.request("POST", "/v1/images/pull", body={"reference": PULLED})
    assert PULLED in _images(d)
    assert_accounted(d, NAMES)
    d.client.request("DELETE", f"/v1/images/{PULLED}")


def op_netcreate(d: Nyxd) -> None:
    _quiet(lambda: d.client.request("POST", "/v1/networks", body={"name": "crashnet2"}))


def op_netrm(d: Nyxd) -> None:
    d.client.request("POST", "/v1/networks", body={"name": "crashnet2", "internal": True})
    _quiet(lambda: d.client.request("DELETE", "/v1/networks/crashnet2"))


def redo_network(d: Nyxd) -> None:
    if "crashnet2" in _networks(d):
        d.client.request("DELETE", "/v1/networks/crashnet2")
    d.client.request("POST", "/v1/networks", body={"name": "crashnet2"})
    c = d.client.create(
        {"image": "busybox:nyx", "name": "victim", "command": SLEEP,
         "networks": [{"name": "crashnet2"}]}
    )  # fmt: skip
    assert c["state"] == "running"
    assert_accounted(d, NAMES)
    _gone(d, "victim")
    d.client.request("DELETE", "/v1/networks/crashnet2")


def _leftovers(d: Nyxd) -> None:
    if d.proc is None or d.proc.poll() is not None:
        d.proc = None
        d.start()
    _gone(d, "victim")
    for path in ("/v1/networks/crashnet2", "/v1/images/crash/tiny:v1", f"/v1/images/{PULLED}"):
        with contextlib.suppress(Exception):
            d.client.request("DELETE", path)


def redo_container(d: Nyxd) -> None:
    redo_run(d)


CASES: list[tuple[str, Callable[[Nyxd], None], Callable[[Nyxd], None]]] = [
    *((p, op_run, redo_run) for p in ("create:recorded", "start:netns", "start:network",
                                      "start:sysctls", "start:dns", "start:etc", "start:rootfs",
                                      "start:runtime", "start:done")),
    *((p, op_stop, redo_container) for p in ("stop:signal", "exit:teardown", "undo:runtime",
                                             "undo:rootfs", "undo:dns", "undo:network",
                                             "undo:netns", "exit:recorded")),
    *((p, op_exit, redo_container) for p in ("exit:teardown", "undo:network", "exit:recorded")),
    *((p, op_rm, redo_container) for p in ("rm:teardown", "rm:forget")),
    *((p, op_load, redo_load) for p in ("load:uploaded", "store:blob", "store:layer",
                                        "store:index")),
    *((p, op_pull, redo_pull) for p in ("pull:blob", "pull:fetched", "store:blob",
                                        "store:layer", "store:index")),
    *((p, op_netcreate, redo_network) for p in ("network:create", "network:created")),
    *((p, op_netrm, redo_network) for p in ("network:remove", "network:removed")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("point", "op", "redo"), CASES, ids=[f"{op.__name__[3:]}-{p}" for p, op, _ in CASES]
)
def test_sigkill_at_each_step_then_restart(
    crash: Nyxd,
    point: str,
    op: Callable[[Nyxd], None],
    redo: Callable[[Nyxd], None],
) -> None:
    d = crash
    if op is op_pull and not (d.root.parent / "registry").exists():
        pytest.skip("needs docker-registry and skopeo")
    _leftovers(d)  # of a failed case before
    d.kill9()  # a graceful stop would stop the bystander: it lives through every case
    d.start(faults=point)
    op(d)
    assert d.died() == -signal.SIGKILL, f"nyxd did not die at {point}"
    d.start()
    assert_accounted(d, NAMES)
    keeper = d.client.request("GET", "/v1/containers/keeper")
    assert keeper["state"] == "running"  # re-adopted, every time
    redo(d)
    assert_accounted(d, NAMES)


# ------------------------------------------------------------------ compose up / down

STACK = """
name: crashstack
services:
  crashdb:
    image: busybox:nyx
    command: [sleep, "1000"]
    networks: [back]
  crashweb:
    image: busybox:nyx
    depends_on: [crashdb]
    command: [sleep, "1000"]
    ports: ["8095:80"]
    networks: [front, back]
networks:
  front: {}
  back:
    internal: true
"""


class KillingProxy:
    """A control socket in front of nyxd's that counts connections (the client opens one per
    request) and SIGKILLs nyxd when connection ``kill_at`` arrives, before forwarding it."""

    def __init__(self, d: Nyxd, path: Path, kill_at: int | None) -> None:
        self.d, self.path, self.kill_at = d, path, kill_at
        self.count = 0
        path.unlink(missing_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(16)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.count += 1
            if self.count == self.kill_at and self.d.proc is not None:
                self.d.proc.send_signal(signal.SIGKILL)
                self.d.proc.wait(10)
            threading.Thread(target=self._pump, args=(conn,), daemon=True).start()

    def _pump(self, conn: socket.socket) -> None:
        up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            up.connect(str(self.d.socket))
        except OSError:
            up.close()
            conn.close()
            return
        with conn, up:
            pair = {conn: up, up: conn}
            while pair:
                ready, _, _ = select.select(list(pair), [], [], 60)
                if not ready:
                    return
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    pair[s].sendall(data)

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)


def _compose(
    d: Nyxd, workdir: Path, socket_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "nyx"), "--socket", str(socket_path), "compose", *args],
        capture_output=True, text=True, timeout=180, cwd=workdir,
    )  # fmt: skip


def _through_proxy(
    d: Nyxd, workdir: Path, kill_at: int | None, *args: str
) -> tuple[int, subprocess.CompletedProcess[str]]:
    proxy = KillingProxy(d, workdir / "proxy.sock", kill_at)
    try:
        done = _compose(d, workdir, proxy.path, *args)
    finally:
        proxy.close()
    return proxy.count, done


@pytest.mark.parametrize("command", ["up", "down"])
def test_sigkill_between_the_requests_of_compose(crash: Nyxd, tmp_path: Path, command: str) -> None:
    """``nyx compose up -d`` / ``down``: nyxd killed before each of the client's requests
    in turn; after a restart the host is exactly what was made so far, and the same
    command run again finishes the job."""
    d = crash
    _leftovers(d)
    (tmp_path / "compose.yaml").write_text(STACK)

    def up() -> None:
        r = _compose(d, tmp_path, d.socket, "up", "-d")
        assert r.returncode == 0, r.stdout + r.stderr

    def down() -> None:
        r = _compose(d, tmp_path, d.socket, "down", "-t", "1")
        assert r.returncode == 0, r.stdout + r.stderr

    args = ("up", "-d") if command == "up" else ("down", "-t", "1")
    if command == "down":
        up()
    total, done = _through_proxy(d, tmp_path, None, *args)  # how many requests it makes
    assert done.returncode == 0, done.stdout + done.stderr
    assert total >= 4
    if command == "up":
        down()
    for k in range(1, total + 1):
        if command == "down":
            up()
        _, done = _through_proxy(d, tmp_path, k, *args)
        assert done.returncode != 0, f"request {k}: the command did not notice nyxd's death"
        assert d.died() == -signal.SIGKILL
        d.start()
        assert_accounted(d, NAMES)
        (up if command == "up" else down)()  # the same command finishes the job
        assert_accounted(d, NAMES)
        if command == "up":
            down()
    assert_accounted(d, NAMES)
    assert {c["name"] for c in d.client.request("GET", "/v1/containers", params={"all": 1})} == {
        "keeper"
    }
