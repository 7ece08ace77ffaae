"""E2E kit: a real nyxd (native driver, embedded DNS, runc) in a throwaway host namespace.

Imported by ``conftest.py`` (fixtures) and the tests (``Nyxd``).

The host namespace is the test kit's real-looking host (:class:`nyx_core.testing.HostTopology`):
``uplink0`` 203.0.113.2 with the default route to an "internet" namespace (server address
198.18.0.10), ``lan0`` 198.51.100.1 to a LAN neighbour (198.51.100.2, the ``external_ns``
fixture). nyxd runs as ``nsenter --net=/run/netns/<host-ns> -- unshare --mount
--propagation slave nyxd ...`` (``ip netns exec`` would remount /sys and hide the cgroup
mounts from runc), with its state, run dir and socket under the test's tmp dir and a
10.231.x test subnet. Nothing touches the root namespace; every fixture cleans up in
``finally``.
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

from nyx_cli.client._http import ApiError, Client, DaemonUnavailable
from nyx_core.testing import HOST_LINKS, LAN_HOST_IP, HostTopology, Neighbour, Netns

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
        self,
        ns: Netns,
        root: Path,
        subnet_octet: int,
        *,
        shared_mounts: bool = False,
        topology: HostTopology | None = None,
    ) -> None:
        self.ns = ns
        self.topology = topology
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
        """nyx's veths in the host namespace (the topology's own links left out)."""
        return [
            link["ifname"]
            for link in self.ns.ipj("-d", "link", "show")
            if (link.get("linkinfo") or {}).get("info_kind") == "veth"
            and link["ifname"] not in HOST_LINKS
        ]

    @property
    def subnet_prefix(self) -> str:
        return f"10.231.{self.octet}."

    def mountinfo(self) -> str:
        """``/proc/<pid>/mountinfo`` of nyxd's own mount namespace (never the test's: nyxd
        mounts in a namespace of its own, invisible from here)."""
        pid = None
        if self.proc is not None and self.proc.poll() is None:
            pid = self.proc.pid
        elif self.holder is not None and self.holder.poll() is None:
            pid = self.holder.pid
        if pid is None:
            raise AssertionError("no nyxd (or mount namespace holder) running to look into")
        if os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt"):
            raise AssertionError(f"pid {pid} is not in a mount namespace of its own")
        return Path(f"/proc/{pid}/mountinfo").read_text()

    def ruleset(self) -> dict[str, Any]:
        """The host namespace's nftables ruleset (JSON)."""
        out = self.host("nft", "-j", "list", "ruleset").stdout
        return json.loads(out) if out.strip() else {"nftables": []}

    def nyx_elements(self, family: str = "ip") -> dict[str, list[Any]]:
        """Elements of table ``ip nyx``'s (or ``ip6 nyx``'s) per-container maps and sets
        ({} without the table)."""
        out: dict[str, list[Any]] = {}
        for item in self.ruleset()["nftables"]:
            obj = item.get("map") or item.get("set")
            if obj and obj.get("table") == "nyx" and obj.get("family") == family:
                out[obj["name"]] = list(obj.get("elem", []))
        return out


_octets = iter(range(10, 250))


@pytest.fixture
def nyxd_factory(tmp_path: Path, busybox_tar: Path) -> Iterator[Callable[..., Nyxd]]:
    """``nyxd_factory(*flags)``: a started nyxd with busybox:nyx loaded."""
    made: list[Nyxd] = []

    def make(*flags: str, load: bool = True, shared_mounts: bool = False) -> Nyxd:
        topo = HostTopology.create()
        d = Nyxd(
            topo.host,
            tmp_path / f"nyxd{len(made)}",
            next(_octets),
            shared_mounts=shared_mounts,
            topology=topo,
        )
        made.append(d)
        d.root.mkdir(parents=True)
        d.start(*flags)
        if load:
            d.client.load(busybox_tar)
        return d

    try:
        yield make
    finally:
        for d in made:
            try:
                d.stop()
            finally:
                d.force_cleanup()
                d.close()
                if d.topology is not None:
                    d.topology.delete()


@pytest.fixture
def nyxd(nyxd_factory: Callable[..., Nyxd]) -> Nyxd:
    return nyxd_factory()


@pytest.fixture
def external_ns(nyxd: Nyxd) -> tuple[Neighbour, str]:
    """nyxd's LAN neighbour and the host's address on that LAN: ``(ns, "198.51.100.1")``.

    The neighbour (198.51.100.2) can route more through the host on request
    (:meth:`~nyx_core.testing.Neighbour.route_to_host`,
    :meth:`~nyx_core.testing.Neighbour.route_localhost_to_host`).
    """
    assert nyxd.topology is not None
    return nyxd.topology.lan, LAN_HOST_IP


@pytest.fixture
def internet_ns(nyxd: Nyxd) -> Netns:
    """The far end of nyxd's uplink (203.0.113.1, and the server address 198.18.0.10)."""
    assert nyxd.topology is not None
    return nyxd.topology.internet
