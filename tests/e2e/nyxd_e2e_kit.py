"""E2E kit: a real nyxd (native driver, embedded DNS, runc) in a throwaway host namespace.

Imported by ``conftest.py`` (fixtures) and the tests (``Nyxd``).

nyxd runs as ``nsenter --net=/run/netns/<host-ns> -- unshare --mount --propagation slave
nyxd ...`` (``ip netns exec`` would remount /sys and hide the cgroup mounts from runc), with
its state, run dir and socket under the test's tmp dir and a 10.231.x test subnet. Nothing
touches the root namespace; every fixture cleans up in ``finally``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nyx_cli._http import ApiError, Client, DaemonUnavailable
from nyx_core.testing import Netns

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("runc", "nsenter", "unshare", "ip", "nft", "busybox"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    why = _missing()
    if why:
        pytest.skip(why)
    out = tmp_path_factory.mktemp("img") / "busybox.tar"
    subprocess.run(
        [sys.executable, str(ROOT / "examples" / "busybox_image.py"), str(out)],
        check=True,
        capture_output=True,
    )
    return out


class Nyxd:
    """One nyxd process in ``ns`` with everything under ``root``.

    ``shared_mounts=True`` runs every nyxd started by this object in one mount namespace
    held by a ``sleep`` process, like nyxd restarts on a real host (its netns and rootfs
    mounts survive a crash); by default each start gets a fresh private mount namespace.
    """

    def __init__(
        self, ns: Netns, root: Path, subnet_octet: int, *, shared_mounts: bool = False
    ) -> None:
        self.ns = ns
        self.shared_mounts = shared_mounts
        self.holder: subprocess.Popen[bytes] | None = None
        self.root = root
        self.state = root / "state"
        self.run = root / "run"
        self.socket = root / "run" / "nyxd.sock"
        self.log = root / "nyxd.log"
        self.octet = subnet_octet
        self.gateway = f"10.231.{subnet_octet}.1"
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = Client(self.socket)

    def _enter(self) -> list[str]:
        private = ["nsenter", f"--net={self.ns.path}", "--"]
        private += ["unshare", "--mount", "--propagation", "slave"]
        if not self.shared_mounts:
            return private
        if self.holder is None:
            self.holder = subprocess.Popen([*private, "sleep", "infinity"])
            deadline = time.monotonic() + 10
            mine = os.readlink("/proc/self/ns/mnt")
            while os.readlink(f"/proc/{self.holder.pid}/ns/mnt") == mine:
                if time.monotonic() > deadline:
                    raise AssertionError("mount namespace holder did not start")
                time.sleep(0.01)
        return ["nsenter", "-t", str(self.holder.pid), "--mount", "--net", "--"]

    def close(self) -> None:
        """Stop the mount namespace holder (after :meth:`stop` and :meth:`force_cleanup`)."""
        if self.holder is not None:
            self.holder.kill()
            self.holder.wait(10)
            self.holder = None

    def start(self, *extra: str, wait: float = 30) -> None:
        argv = [
            *self._enter(),
            str(BIN / "nyxd"),
            "--state-dir",
            str(self.state),
            "--run-dir",
            str(self.run),
            "--socket",
            str(self.socket),
            "--container-subnet",
            f"10.231.{self.octet}.0/24",
            "--gateway-ip",
            self.gateway,
            "--bridge",
            "nyxt0",
            "--log-level",
            "debug",
            *extra,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("NYXD_")}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"nyxd exited {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                self.client.info()
                return
            except (DaemonUnavailable, ApiError):
                time.sleep(0.1)
        raise AssertionError(f"nyxd did not answer in {wait}s:\n{self.log.read_text()}")

    def stop(self, timeout: float = 60) -> int | None:
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        return proc.returncode

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.proc = None

    def nyx(self, *args: str, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "nyx"), "--socket", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            **kw,
        )

    def host(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a command in the host namespace (network only)."""
        return subprocess.run(
            ["nsenter", f"--net={self.ns.path}", "--", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def runc_list(self) -> list[dict[str, Any]]:
        root = self.run / "runc"
        if not root.exists():
            return []
        out = subprocess.run(
            ["runc", "--root", str(root), "list", "--format", "json"],
            capture_output=True,
            text=True,
        ).stdout
        return json.loads(out or "null") or []

    def force_cleanup(self) -> None:
        """Last resort after a failed test: kill what runc still knows."""
        for item in self.runc_list():
            subprocess.run(
                ["runc", "--root", str(self.run / "runc"), "delete", "--force", item["id"]],
                capture_output=True,
            )

    def veths(self) -> list[str]:
        return [
            link["ifname"]
            for link in self.ns.ipj("-d", "link", "show")
            if (link.get("linkinfo") or {}).get("info_kind") == "veth"
            and not link["ifname"].startswith("ext")
        ]


_octets = iter(range(10, 250))


@pytest.fixture
def nyxd_factory(tmp_path: Path, busybox_tar: Path) -> Iterator[Callable[..., Nyxd]]:
    """``nyxd_factory(*flags)``: a started nyxd with busybox:nyx loaded."""
    made: list[tuple[Nyxd, Netns]] = []

    def make(*flags: str, load: bool = True, shared_mounts: bool = False) -> Nyxd:
        ns = Netns.create("host")
        d = Nyxd(ns, tmp_path / f"nyxd{len(made)}", next(_octets), shared_mounts=shared_mounts)
        d.root.mkdir(parents=True)
        made.append((d, ns))
        d.start(*flags)
        if load:
            d.client.load(busybox_tar)
        return d

    try:
        yield make
    finally:
        for d, ns in made:
            try:
                d.stop()
            finally:
                d.force_cleanup()
                d.close()
                ns.delete()


@pytest.fixture
def nyxd(nyxd_factory: Callable[..., Nyxd]) -> Nyxd:
    return nyxd_factory()


@pytest.fixture
def external_ns(nyxd: Nyxd) -> Iterator[tuple[Netns, str]]:
    """A namespace wired to nyxd's host namespace by a veth: (ns, host-side address)."""
    ext = Netns.create("ext")
    host_ip, ext_ip = "10.232.0.1", "10.232.0.2"
    peer = f"ext{os.getpid() % 100000}"
    try:
        nyxd.ns.ip("link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", ext.name)
        nyxd.ns.ip("addr", "add", f"{host_ip}/24", "dev", peer)
        nyxd.ns.ip("link", "set", peer, "up")
        ext.ip("addr", "add", f"{ext_ip}/24", "dev", "eth0")
        ext.ip("link", "set", "eth0", "up")
        yield ext, host_ip
    finally:
        ext.delete()
