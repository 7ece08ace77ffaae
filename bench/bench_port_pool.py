#!/usr/bin/env python3
"""Would a pool of ready bridge ports take the kernel's per-port cost off a container's setup?

Adding a port to a bridge of N ports walks lists as long as N in the kernel (the port-number
bitmap, the bridge's lower-device adjacency list, the promiscuity and FDB sync, the
features, MTU and GSO recomputation); docs/performance.md ("Scale") shows it as most of the
native driver's growth at 1,000 containers. A pool would enslave veths ahead of time and,
at setup, only move the container end into the container's network namespace. This measures
both ways with ``--ports`` ports on the bridge, in namespaces of its own:

* ``create``: what the native driver does: a veth made on the bridge with its peer created
  directly in the container namespace (one RTM_NEWLINK), then up;
* ``move``:   the pool's setup: a veth made beforehand (on the bridge, up, its peer in the
  "host" namespace, not timed), then its peer moved into the container namespace and
  renamed ``eth0`` (one RTM_NEWLINK with IFLA_NET_NS_FD).

Usage (root)::

    .venv/bin/python bench/bench_port_pool.py [--ports 1,1000] [--iterations 15]

A bridge takes at most 1,024 ports; each iteration removes its two veths again. Everything
runs in namespaces named ``nyxt-pool*`` that are deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

from nyx_core.testing import Netns, entered


def new_container(keep: list[Netns]) -> int:
    """A fresh container namespace (deleted at the end): an open descriptor of it."""
    ns = Netns.create("poolc")
    keep.append(ns)
    return os.open(ns.path, os.O_RDONLY)


def add_port(ipr: Any, name: str, br: int, peer: dict[str, Any]) -> float:
    """A veth ``name`` on the bridge, up, its peer as ``peer`` says; milliseconds taken."""
    t0 = time.perf_counter()
    ipr.link("add", ifname=name, kind="veth", master=br, peer=peer)
    ipr.link("set", ifname=name, state="up")
    return (time.perf_counter() - t0) * 1000


def measure(ports: int, iterations: int) -> dict[str, list[float]]:
    from pyroute2 import IPRoute

    keep: list[Netns] = []
    host = Netns.create("poolh")
    out: dict[str, list[float]] = {"create": [], "move": []}
    try:
        with entered(host.path):
            ipr = IPRoute()
        ipr.link("add", ifname="pp0", kind="bridge", br_mcast_snooping=0)
        br = ipr.link_lookup(ifname="pp0")[0]
        ipr.link("set", index=br, state="up")
        for i in range(ports + iterations):
            fd = new_container(keep)
            try:
                if i < ports:  # the ports already there
                    add_port(ipr, f"pp{i}x", br, {"ifname": "eth0", "net_ns_fd": fd})
                    continue
                it = i - ports
                # what the native driver does, timed
                took = add_port(ipr, f"pc{it}", br, {"ifname": "eth0", "net_ns_fd": fd})
                out["create"].append(took)
            finally:
                os.close(fd)
            # the pool's entry, made ahead of time (not timed), then moved (timed)
            add_port(ipr, f"pm{it}", br, {"ifname": f"pq{it}"})
            peer = ipr.link_lookup(ifname=f"pq{it}")[0]
            fd = new_container(keep)
            try:
                t0 = time.perf_counter()
                ipr.link("set", index=peer, net_ns_fd=fd, ifname="eth0")
                out["move"].append((time.perf_counter() - t0) * 1000)
            finally:
                os.close(fd)
            for name in (f"pc{it}", f"pm{it}"):  # the bridge stays at ``ports`` ports
                ipr.link("del", ifname=name)
        ipr.close()
    finally:
        for ns in keep:
            ns.delete()
        host.delete()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ports", default="1,1000", help="bridge sizes, comma separated")
    ap.add_argument("--iterations", type=int, default=15)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_port_pool: needs root")
    print(f"one more port, {args.iterations} iterations; ms (median / p90)")
    print(f"{'ports':>6} {'create (today)':>18} {'move (a pool)':>18} {'move/create':>12}")
    for n in (int(x) for x in args.ports.split(",")):
        res = measure(n, args.iterations)
        med = {k: statistics.median(v) for k, v in res.items()}
        p90 = {k: sorted(v)[int(len(v) * 0.9)] for k, v in res.items()}
        print(
            f"{n:6d} {med['create']:8.2f} / {p90['create']:7.2f} "
            f"{med['move']:8.2f} / {p90['move']:7.2f} {med['move'] / med['create']:12.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
