"""SIGKILL at a random moment of a parallel workload, 50 times (slow).

A real nyxd (shared mount namespace: its mounts survive the kill, as on a real host) runs
a workload of parallel clients: containers created, started, stopped and removed (with
published ports, on the default network and on an internal one) and networks created and
removed. At a random moment nyxd is killed with SIGKILL, restarted, and the host must hold
exactly what the surviving containers and the networks account for
(:func:`nyxd_e2e_kit.accounting`). Fault points pick the steps; this picks the moments in
between them.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from nyxd_e2e_kit import Nyxd, accounting

from nyx_core.testing import HostTopology

pytestmark = [pytest.mark.e2e, pytest.mark.kernel, pytest.mark.slow]

KILLS = int(os.environ.get("NYX_TEST_RANDOM_KILLS", "50"))
WORKERS = 3


@pytest.fixture(scope="module")
def rnd(busybox_tar: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nyxd]:
    root = tmp_path_factory.mktemp("random")
    topo = HostTopology.create()
    d = Nyxd(topo.host, root / "nyxd", 8, shared_mounts=True, topology=topo)
    d.root.mkdir()
    try:
        d.start()
        d.client.load(busybox_tar)
        d.client.request("POST", "/v1/networks", body={"name": "randnet", "internal": True})
        yield d
    finally:
        try:
            d.stop()
        finally:
            d.force_cleanup()
            d.close()
            topo.delete()


class Workload:
    """Parallel clients until the first error (nyxd's death)."""

    def __init__(self, d: Nyxd, rng: random.Random, names: set[str], serial: Iterator[int]) -> None:
        self.d, self.rng, self.names, self.serial = d, rng, names, serial
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._containers, args=(i,), daemon=True)
            for i in range(WORKERS)
        ]
        self.threads.append(threading.Thread(target=self._networks, daemon=True))

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(120)
            assert not t.is_alive(), "a workload client hangs after nyxd's death"

    def _containers(self, worker: int) -> None:
        c = self.d.client
        with contextlib.suppress(Exception):
            while not self.stop.is_set():
                n = next(self.serial)
                name = f"r{worker}-{n}"
                self.names.add(name)
                nets = [{"name": "nyx"}] + ([{"name": "randnet"}] if n % 2 else [])
                spec = {
                    "image": "busybox:nyx",
                    "name": name,
                    "command": ["sleep", "1000"],
                    "ports": [f"{20000 + n % 20000}:80"],
                    "networks": nets,
                }
                c.create(spec)
                if self.rng.random() < 0.7:
                    c.stop(name, timeout=0)
                if self.rng.random() < 0.8:
                    c.request("DELETE", f"/v1/containers/{name}", params={"force": 1})

    def _networks(self) -> None:
        c = self.d.client
        with contextlib.suppress(Exception):
            while not self.stop.is_set():
                name = f"rnet{next(self.serial)}"
                c.request("POST", "/v1/networks", body={"name": name})
                time.sleep(self.rng.random() * 0.2)
                c.request("DELETE", f"/v1/networks/{name}")


def _reset(d: Nyxd) -> None:
    """Back to the base state: no container, only the default network and randnet."""
    for row in d.client.request("GET", "/v1/containers", params={"all": 1}):
        d.client.request("DELETE", f"/v1/containers/{row['id']}", params={"force": 1})
    for net in d.client.request("GET", "/v1/networks"):
        if net["name"] not in ("nyx", "randnet"):
            d.client.request("DELETE", f"/v1/networks/{net['name']}")


def test_sigkill_at_random_moments_of_a_parallel_workload(rnd: Nyxd) -> None:
    d = rnd
    seed = int(os.environ.get("NYX_TEST_SEED", str(random.randrange(1 << 30))))
    rng = random.Random(seed)
    names: set[str] = set()
    serial = itertools.count()
    for i in range(KILLS):
        work = Workload(d, rng, names, serial)
        work.start()
        time.sleep(rng.uniform(0.05, 1.5))
        d.kill9()
        work.join()
        d.start()
        survivors = sum(
            c["state"] == "running"
            for c in d.client.request("GET", "/v1/containers", params={"all": 1})
        )
        problems = accounting(d, names)
        assert not problems, f"kill {i + 1} (seed {seed}, {survivors} survivors):\n" + "\n".join(
            problems
        )
        _reset(d)
    assert len(names) > 2 * KILLS, f"the workload hardly ran: {len(names)} containers"
