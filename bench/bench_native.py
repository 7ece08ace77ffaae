#!/usr/bin/env python3
"""Per-container setup/teardown latency of the native driver, side by side with its peers.

Peers, all measured in one run on the same kernel, each in a fresh "host" namespace:

* ``nyx``      the native driver through its hooks (IPAM, validation, state file, port
               reservation included);
* ``nyx6``     the same on a dual-stack network (``--container-subnet6``): an IPv6 address
               and route too, the port published on both families;
* ``floor``    the bare minimum in-process: pyroute2 veth (peer created in the container
               netns) + address/route inside + one libnftables map element, nothing else;
* ``floor6``   the same with an IPv6 address and route too, on a bridge with an IPv6
               gateway (the kernel's own share of dual stack);
* ``netavark`` Debian's netavark 1.4 (``netavark setup|teardown``, JSON on stdin, iptables);
* ``netavark6`` the same on a dual-stack network (``ipv6_enabled``, a second subnet);
* ``cni``      the CNI reference plugins exec'd directly: bridge (+ host-local) + portmap.

Every setup publishes one port. For each level N, N containers are attached first, then one
more container is set up and torn down ``--iterations`` times, the peers taking turns so a
noisy machine slows them alike; median and p90 are printed with nyx/peer ratios, and the
dual-stack ratios nyx6/nyx and nyx6/netavark6. Usage (root)::

    .venv/bin/python bench/bench_native.py [--levels 1,50,200] [--iterations 15] [--profile]

``--settle S`` waits S seconds after attaching the containers of each level, before the
timed runs: a burst of new interfaces keeps the kernel busy for a few seconds (IPv6
duplicate address detection, router solicitations and MLD reports of every new interface,
flooded to every port of its bridge; the floor's interfaces have IPv6 on), and without it
the first iterations at a high level measure that storm as much as the setup.

``--profile`` runs cProfile around the measured setups and teardowns of ``nyx`` at the
highest level (after the timed runs, so the timings are not slowed) and prints the top
functions by cumulative and by own time.

Everything runs in namespaces named ``nyxt-nbench*-<pid>-*`` that are deleted at the end.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nyx_core import NetworkBackend, NyxSettings, PortMapping, SetupOptions
from nyx_core.testing import Netns, entered
from nyx_plugins_native import NativeSettings

SUBNET = ipaddress.IPv4Network("10.232.0.0/16")
GATEWAY = ipaddress.IPv4Address("10.232.0.1")
SUBNET6 = ipaddress.IPv6Network("fd00:232::/64")
GATEWAY6 = ipaddress.IPv6Address("fd00:232::1")
NETAVARK = "/usr/lib/podman/netavark"
CNI_PATH = "/usr/lib/cni"


def ip_for(i: int) -> str:
    return str(SUBNET.network_address + 10 + i)


def ip6_for(i: int) -> str:
    return str(SUBNET6.network_address + 10 + i)


class Peer:
    name = "?"

    def prepare(self, tmp: Path) -> None: ...

    def setup(self, i: int, ns: Netns) -> None: ...

    def teardown(self, i: int, ns: Netns) -> None: ...


class Nyx(Peer):
    name = "nyx"
    subnet6: ipaddress.IPv6Network | None = None

    def prepare(self, tmp: Path) -> None:
        self.backend = NetworkBackend.load("native")
        self.settings = NyxSettings(
            state_dir=tmp / "state",
            run_dir=tmp / "run",
            container_subnet=SUBNET,
            gateway_ip=GATEWAY,
            container_subnet6=self.subnet6,
        ).with_plugins(NativeSettings(bridge="nyxb0"))
        self.backend.ensure_network(self.settings)

    def setup(self, i: int, ns: Netns) -> None:
        port = [PortMapping(host_port=20000 + i, container_port=80)]
        self.backend.setup(f"bench-{i}", ns.path, port, SetupOptions())

    def teardown(self, i: int, ns: Netns) -> None:
        self.backend.teardown(f"bench-{i}", ns.path)


class Nyx6(Nyx):
    name = "nyx6"
    subnet6 = SUBNET6


class Floor(Peer):
    """The least an in-process driver must do; no IPAM, checks, state or reservations."""

    name = "floor"
    ipv6 = False

    def prepare(self, tmp: Path) -> None:
        from pyroute2 import IPRoute

        from nyx_plugins_native._nft import load_nftables

        self.IPRoute = IPRoute
        self.ipr = IPRoute()
        self.ipr.link("add", ifname="flb0", kind="bridge")
        self.br = self.ipr.link_lookup(ifname="flb0")[0]
        self.ipr.addr("add", index=self.br, address=str(GATEWAY), prefixlen=SUBNET.prefixlen)
        if self.ipv6:
            self.ipr.addr(
                "add", index=self.br, address=str(GATEWAY6), prefixlen=64, flags=0x02
            )  # nodad
        self.ipr.link("set", index=self.br, state="up")
        self.nft = load_nftables().Nftables()
        self.nft.set_json_output(True)
        rc, _o, err = self.nft.cmd(
            "add table ip floor\n"
            "add map ip floor ports { type inet_proto . inet_service : "
            "ipv4_addr . inet_service; }\n"
            "add chain ip floor pre { type nat hook prerouting priority -100; }\n"
            "add rule ip floor pre fib daddr type local dnat ip to "
            "meta l4proto . th dport map @ports\n"
        )
        assert rc == 0, err

    def _elem(self, verb: str, i: int) -> None:
        elem: list[Any] = [{"concat": ["tcp", 20000 + i]}]
        if verb == "add":
            elem = [[elem[0], {"concat": [ip_for(i), 80]}]]
        cmd = {
            "nftables": [
                {
                    verb: {
                        "element": {"family": "ip", "table": "floor", "name": "ports", "elem": elem}
                    }
                }
            ]
        }
        rc, _o, err = self.nft.cmd(json.dumps(cmd))
        assert rc == 0, err

    def setup(self, i: int, ns: Netns) -> None:
        fd = os.open(ns.path, os.O_RDONLY)
        try:
            self.ipr.link(
                "add",
                ifname=f"fl{i}",
                kind="veth",
                master=self.br,
                state="up",
                peer={"ifname": "eth0", "net_ns_fd": fd},
            )
        finally:
            os.close(fd)
        with entered(ns):
            c = self.IPRoute()
        try:
            idx = c.link("get", ifname="eth0")[0]["index"]
            c.addr("add", index=idx, address=ip_for(i), prefixlen=SUBNET.prefixlen)
            if self.ipv6:
                c.addr("add", index=idx, address=ip6_for(i), prefixlen=64, flags=0x02)
            c.link("set", index=idx, state="up")
            c.route("add", dst="0.0.0.0/0", gateway=str(GATEWAY))
            if self.ipv6:
                c.route("add", dst="::/0", gateway=str(GATEWAY6))
        finally:
            c.close()
        self._elem("add", i)

    def teardown(self, i: int, ns: Netns) -> None:
        self._elem("delete", i)
        self.ipr.link("del", ifname=f"fl{i}")

    def close(self) -> None:
        self.ipr.link("del", index=self.br)
        self.ipr.close()
        del self.nft


class Floor6(Floor):
    name = "floor6"
    ipv6 = True


class Netavark(Peer):
    name = "netavark"
    ipv6 = False

    def prepare(self, tmp: Path) -> None:
        self.config = tmp / "netavark"
        self.config.mkdir()

    def _run(self, cmd: str, i: int, ns: Netns) -> None:
        ips, subnets = [ip_for(i)], [{"subnet": str(SUBNET), "gateway": str(GATEWAY)}]
        if self.ipv6:
            ips.append(ip6_for(i))
            subnets.append({"subnet": str(SUBNET6), "gateway": str(GATEWAY6)})
        conf = {
            "container_id": f"{i:064x}",
            "container_name": f"bench-{i}",
            "networks": {"bench": {"static_ips": ips, "interface_name": "eth0"}},
            "network_info": {
                "bench": {
                    "name": "bench",
                    "id": "1" * 64,
                    "driver": "bridge",
                    "network_interface": "nvb0",
                    "subnets": subnets,
                    "ipv6_enabled": self.ipv6,
                    "internal": False,
                    "dns_enabled": False,
                }
            },
            "port_mappings": [
                {
                    "host_ip": "",
                    "container_port": 80,
                    "host_port": 20000 + i,
                    "range": 1,
                    "protocol": "tcp",
                }
            ],
        }
        subprocess.run(
            [NETAVARK, "--config", str(self.config), cmd, ns.path],
            input=json.dumps(conf),
            text=True,
            check=True,
            capture_output=True,
        )

    def setup(self, i: int, ns: Netns) -> None:
        self._run("setup", i, ns)

    def teardown(self, i: int, ns: Netns) -> None:
        self._run("teardown", i, ns)


class Netavark6(Netavark):
    name = "netavark6"
    ipv6 = True


class Cni(Peer):
    name = "cni"

    def prepare(self, tmp: Path) -> None:
        self.data = tmp / "cni"
        self.results: dict[int, Any] = {}

    def _exec(self, plugin: str, command: str, i: int, ns: Netns, conf: dict[str, Any]) -> Any:
        env = {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": f"bench{i}",
            "CNI_NETNS": ns.path,
            "CNI_IFNAME": "eth0",
            "CNI_PATH": CNI_PATH,
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        }
        out = subprocess.run(
            [f"{CNI_PATH}/{plugin}"],
            input=json.dumps(conf),
            env=env,
            text=True,
            capture_output=True,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"cni {plugin} {command}: {out.stdout} {out.stderr}")
        return json.loads(out.stdout) if out.stdout.strip() else None

    def _confs(self, i: int) -> list[dict[str, Any]]:
        base = {"cniVersion": "1.0.0", "name": "bench"}
        return [
            {
                **base,
                "type": "bridge",
                "bridge": "cnib0",
                "isGateway": True,
                "ipMasq": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(self.data),
                    "ranges": [[{"subnet": str(SUBNET), "gateway": str(GATEWAY)}]],
                },
            },
            {
                **base,
                "type": "portmap",
                "capabilities": {"portMappings": True},
                "runtimeConfig": {
                    "portMappings": [
                        {"hostPort": 20000 + i, "containerPort": 80, "protocol": "tcp"}
                    ]
                },
            },
        ]

    def setup(self, i: int, ns: Netns) -> None:
        prev = None
        for conf in self._confs(i):
            if prev is not None:
                conf = {**conf, "prevResult": prev}
            prev = self._exec(conf["type"], "ADD", i, ns, conf)
        self.results[i] = prev

    def teardown(self, i: int, ns: Netns) -> None:
        prev = self.results.pop(i, None)
        for conf in reversed(self._confs(i)):
            if prev is not None:
                conf = {**conf, "prevResult": prev}
            self._exec(conf["type"], "DEL", i, ns, conf)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


class Runner:
    """One peer in its own host namespace with its own container namespaces."""

    def __init__(self, peer: Peer, size: int) -> None:
        self.peer = peer
        self.host = Netns.create("nbenchhost")
        self.pool: list[Netns] = []
        self.probe = Netns.create("nbenchprobe")
        self.tmp = Path(tempfile.mkdtemp(prefix="nyx-bench-"))
        self.attached = 0
        self.ups: dict[int, list[float]] = {}
        self.downs: dict[int, list[float]] = {}
        try:
            for _ in range(size):
                self.pool.append(Netns.create("nbench"))
            with entered(self.host):
                peer.prepare(self.tmp)
        except BaseException:
            for ns in [self.host, *self.pool, self.probe]:
                ns.delete()
            raise

    def attach(self, level: int) -> None:
        with entered(self.host):
            while self.attached < level:
                self.peer.setup(self.attached, self.pool[self.attached])
                self.attached += 1
            self.peer.setup(PROBE, self.probe)  # warm-up, not counted
            self.peer.teardown(PROBE, self.probe)

    def measure(self, level: int) -> None:
        with entered(self.host):
            t0 = time.perf_counter()
            self.peer.setup(PROBE, self.probe)
            t1 = time.perf_counter()
            self.peer.teardown(PROBE, self.probe)
            t2 = time.perf_counter()
        self.ups.setdefault(level, []).append((t1 - t0) * 1000)
        self.downs.setdefault(level, []).append((t2 - t1) * 1000)

    def close(self) -> None:
        try:
            with entered(self.host):
                if isinstance(self.peer, Nyx | Floor):
                    # in-process peers hold sockets in the host namespace: undo explicitly
                    for i in range(self.attached):
                        self.peer.teardown(i, self.pool[i])
                if isinstance(self.peer, Floor):
                    self.peer.close()
        finally:
            for ns in [self.host, *self.pool, self.probe]:
                ns.delete()
            shutil.rmtree(self.tmp, ignore_errors=True)


PROBE = 40000  # the measured container publishes host port 60000


def profile(r: Runner, level: int, iterations: int) -> None:
    """cProfile ``iterations`` more setups and teardowns of ``r`` (not in the timings)."""
    import cProfile
    import pstats

    ups, downs = cProfile.Profile(), cProfile.Profile()
    with entered(r.host):
        for _ in range(iterations):
            ups.runcall(r.peer.setup, PROBE, r.probe)
            downs.runcall(r.peer.teardown, PROBE, r.probe)
    for what, prof in (("setups", ups), ("teardowns", downs)):
        print(f"\n{r.peer.name}: cProfile of {iterations} {what} at {level} attached")
        for key in ("cumulative", "tottime"):
            pstats.Stats(prof, stream=sys.stdout).sort_stats(key).print_stats(20)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--levels", default="1,50,200")
    ap.add_argument("--iterations", type=int, default=15)
    ap.add_argument("--peers", default="nyx,nyx6,floor,floor6,netavark,netavark6,cni")
    ap.add_argument(
        "--settle",
        type=float,
        default=0.0,
        help="seconds to wait after attaching each level's containers (default 0)",
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="cProfile nyx's setups/teardowns at the highest level (after the timed runs)",
    )
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_native: needs root (network namespaces)", file=sys.stderr)
        return 2
    levels = [int(x) for x in args.levels.split(",")]
    makers: dict[str, Callable[[], Peer]] = {
        "nyx": Nyx,
        "nyx6": Nyx6,
        "floor": Floor,
        "floor6": Floor6,
        "netavark": Netavark,
        "netavark6": Netavark6,
        "cni": Cni,
    }
    names = [p for p in args.peers.split(",") if p]
    if not os.path.exists(NETAVARK):
        for name in ("netavark", "netavark6"):
            if name in names:
                print(f"bench_native: {NETAVARK} missing; {name} skipped", file=sys.stderr)
                names.remove(name)
    if "cni" in names and not os.path.exists(f"{CNI_PATH}/bridge"):
        print(
            "bench_native: CNI plugins missing (containernetworking-plugins); skipped",
            file=sys.stderr,
        )
        names.remove("cni")
    runners: list[Runner] = []
    try:
        print(f"creating {len(names)} x {max(levels)} container namespaces...", file=sys.stderr)
        for name in names:
            runners.append(Runner(makers[name](), max(levels)))
        for level in levels:
            for r in runners:
                r.attach(level)
            time.sleep(args.settle)
            # interleaved: every peer sees the same background load
            for _ in range(args.iterations):
                for r in runners:
                    r.measure(level)
            print(f"  {level} attached: done", file=sys.stderr)
        if args.profile:
            for r in runners:
                if r.peer.name in ("nyx", "nyx6"):
                    profile(r, levels[-1], args.iterations)
    finally:
        for r in runners:
            r.close()
    results = {
        r.peer.name: {
            **{("setup", lv): xs for lv, xs in r.ups.items()},
            **{("teardown", lv): xs for lv, xs in r.downs.items()},
        }
        for r in runners
    }
    print_table(results, levels, args.iterations)
    return 0


def print_table(
    results: dict[str, dict[tuple[str, int], list[float]]], levels: list[int], iters: int
) -> None:
    peers = list(results)
    others = [p for p in peers if p not in ("nyx", "nyx6", "floor6")]
    print(f"\nnative driver, one port map, {iters} iterations; times in ms (median / p90)")
    head = f"{'op':9s} {'attached':>8s} " + " ".join(f"{p:>17s}" for p in peers)
    if "nyx" in results:
        head += " " + " ".join(f"{'nyx/' + p:>13s}" for p in others)
    print(head)
    for op in ("setup", "teardown"):
        for level in levels:
            row = f"{op:9s} {level:8d} "
            meds = {}
            for p in peers:
                xs = results[p][(op, level)]
                meds[p] = statistics.median(xs)
                row += f" {meds[p]:7.2f} / {pct(xs, 0.9):7.2f}"
            if "nyx" in results:
                row += " " + " ".join(f"{meds['nyx'] / meds[p]:13.2f}" for p in others)
            print(row)
    if "nyx" in results and len(levels) > 1:
        lo, hi = levels[0], levels[-1]
        r = statistics.median(results["nyx"][("setup", hi)]) / statistics.median(
            results["nyx"][("setup", lo)]
        )
        print(f"nyx setup at {hi} attached / at {lo} attached: {r:.2f}")
    if "nyx6" in results:
        print("dual stack (setup medians):")
        for level in levels:
            six = statistics.median(results["nyx6"][("setup", level)])
            text = f"  {level:4d} attached: nyx6 {six:7.2f} ms"
            for peer in ("nyx", "floor6", "netavark6"):
                if peer in results:
                    other = statistics.median(results[peer][("setup", level)])
                    text += f"  nyx6/{peer} {six / other:.2f}"
            if "floor" in results and "floor6" in results:
                f4, f6 = (
                    statistics.median(results[f][("setup", level)]) for f in ("floor", "floor6")
                )
                text += f"  (floor6/floor {f6 / f4:.2f})"
            print(text)


if __name__ == "__main__":
    raise SystemExit(main())
