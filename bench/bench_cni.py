#!/usr/bin/env python3
"""Setup/teardown latency of the CNI driver next to the same plugin chain run by a bare script.

Peers, measured in one run, interleaved (one container each per round), each in a fresh
"host" namespace of its own:

* ``cni``     the nyx CNI driver through its hooks (``NetworkBackend.load("cni")``): loopback
              + bridge/host-local + portmap from /usr/lib/cni, validation, port reservation,
              result cache, rollback bookkeeping included;
* ``bare``    the same plugins with the same configuration exec'd by a bash script that only
              chains ``prevResult`` and keeps the result in a file for DEL (no checks);
* ``native``  the native driver (in-process netlink + nftables), when it is installed.

Every setup publishes one port. Prints median and p90 per peer and the cni/bare ratios (target
<= 1.1). Usage (root)::

    .venv/bin/python bench/bench_cni.py [--iterations 30]

Namespaces are named ``nyxt-benchcni-<pid>-*`` and deleted at the end.
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
from pathlib import Path

from nyx_core import NetworkBackend, NyxSettings, PortMapping, SetupOptions
from nyx_core.errors import NyxError
from nyx_core.testing import Netns, entered
from nyx_plugins_cni import default_conflist

CNI_PATH = Path("/usr/lib/cni")
SUBNET = ipaddress.IPv4Network("10.232.0.0/24")
GATEWAY = ipaddress.IPv4Address("10.232.0.1")


def _ns(role: str) -> Netns:
    ns = Netns(f"nyxt-benchcni-{os.getpid()}-{role}")
    subprocess.run(["ip", "netns", "add", ns.name], check=True)
    ns.ip("link", "set", "lo", "up")
    return ns


def _settings(tmp: Path, bridge: str) -> NyxSettings:
    from nyx_plugins_cni import CniSettings

    return NyxSettings(
        state_dir=tmp / "state",
        run_dir=tmp / "run",
        container_subnet=SUBNET,
        gateway_ip=GATEWAY,
    ).with_plugins(CniSettings(bin_dir=CNI_PATH, conf_dir=tmp / "net.d", bridge=bridge))


class Peer:
    name = "?"
    host: Netns

    def prepare(self, tmp: Path) -> None: ...

    def setup(self, cid: str, ns: Netns, port: int) -> None: ...

    def teardown(self, cid: str, ns: Netns) -> None: ...


class Driver(Peer):
    """A nyx driver through the hook facade (the path nyxd takes)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def prepare(self, tmp: Path) -> None:
        self.backend = NetworkBackend.load(self.name)
        self.backend.ensure_network(_settings(tmp, "nyxb0"))

    def setup(self, cid: str, ns: Netns, port: int) -> None:
        ports = [PortMapping(host_port=port, container_port=80)]
        self.backend.setup(cid, ns.path, ports, SetupOptions())

    def teardown(self, cid: str, ns: Netns) -> None:
        self.backend.teardown(cid, ns.path)


BARE = r"""#!/bin/bash
# the CNI chain, bare: loopback, bridge (+host-local), portmap; result kept for DEL
set -e
cmd=$1 id=$2 netns=$3 port=$4 dir=$5
export CNI_PATH=@PATH@ CNI_CONTAINERID=$id CNI_NETNS=$netns CNI_ARGS=
LO='{"cniVersion":"1.0.0","name":"cni-loopback","type":"loopback"}'
BR='@BRIDGE@'
PM='"cniVersion":"1.0.0","name":"nyx","type":"portmap","runtimeConfig":{"portMappings":[{"hostPort":'$port',"containerPort":80,"protocol":"tcp"}]}'
if [ "$cmd" = ADD ]; then
  lo=$(CNI_COMMAND=ADD CNI_IFNAME=lo @PATH@/loopback <<<"$LO")
  r=$(CNI_COMMAND=ADD CNI_IFNAME=eth0 @PATH@/bridge <<<"$BR")
  r=$(CNI_COMMAND=ADD CNI_IFNAME=eth0 @PATH@/portmap <<<"{$PM,\"prevResult\":$r}")
  printf '%s' "$r" >"$dir/$id"
  printf '%s' "$lo" >"$dir/$id.lo"
else
  r=$(cat "$dir/$id")
  lo=$(cat "$dir/$id.lo")
  CNI_COMMAND=DEL CNI_IFNAME=eth0 @PATH@/portmap <<<"{$PM,\"prevResult\":$r}" >/dev/null
  CNI_COMMAND=DEL CNI_IFNAME=eth0 @PATH@/bridge <<<"${BR%\}},\"prevResult\":$r}" >/dev/null
  CNI_COMMAND=DEL CNI_IFNAME=lo @PATH@/loopback <<<"${LO%\}},\"prevResult\":$lo}" >/dev/null
  rm -f "$dir/$id" "$dir/$id.lo"
fi
"""


class Bare(Peer):
    """The same chain and configuration, exec'd by a bash script."""

    name = "bare"

    def prepare(self, tmp: Path) -> None:
        settings = _settings(tmp, "nyxb0")
        conf = default_conflist(settings)
        bridge = dict(conf["plugins"][0], cniVersion="1.0.0", name="nyx")
        self.script = tmp / "bare-chain.sh"
        self.script.write_text(
            BARE.replace("@PATH@", str(CNI_PATH)).replace(
                "@BRIDGE@", json.dumps(bridge, separators=(",", ":"))
            )
        )
        self.ports: dict[str, int] = {}
        self.dir = tmp / "bare-results"
        self.dir.mkdir()
        # the same priming the driver does: bridge and portmap's top-level chains exist
        prime = _ns("bareprime")
        try:
            self._run("ADD", "prime", prime.path, 65535)
            self._run("DEL", "prime", prime.path, 65535)
        finally:
            prime.delete()

    def _run(self, cmd: str, cid: str, path: str, port: int) -> None:
        subprocess.run(
            ["bash", str(self.script), cmd, cid, path, str(port), str(self.dir)],
            check=True,
            stdin=subprocess.DEVNULL,
        )

    def setup(self, cid: str, ns: Netns, port: int) -> None:
        self.ports[cid] = port
        self._run("ADD", cid, ns.path, port)

    def teardown(self, cid: str, ns: Netns) -> None:
        self._run("DEL", cid, ns.path, self.ports.pop(cid))


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=30)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_cni: needs root (network namespaces)", file=sys.stderr)
        return 1
    if not (CNI_PATH / "bridge").exists() or shutil.which("iptables") is None:
        print("bench_cni: skipped: needs containernetworking-plugins and iptables")
        return 0
    peers: list[Peer] = [Driver("cni"), Bare()]
    try:
        NetworkBackend.load("native")
        peers.append(Driver("native"))
    except NyxError as exc:
        print(f"native: skipped ({exc})")
    made: list[Netns] = []
    tmp_root = Path(tempfile.mkdtemp(prefix="nyx-bench-cni-"))
    times: dict[str, dict[str, list[float]]] = {
        p.name: {"setup": [], "teardown": []} for p in peers
    }
    try:
        ready: list[Peer] = []
        for p in peers:
            p.host = _ns(f"host{p.name}")
            made.append(p.host)
            tmp = tmp_root / p.name
            tmp.mkdir()
            try:
                with entered(p.host):
                    p.prepare(tmp)
                ready.append(p)
            except (NyxError, subprocess.CalledProcessError) as exc:
                print(f"{p.name}: skipped ({exc})")
        for i in range(args.iterations):
            for p in ready:
                ctr = _ns(f"{p.name}ctr{i}")
                made.append(ctr)
                cid = f"bench-{p.name}-{i}"
                with entered(p.host):
                    t0 = time.perf_counter()
                    p.setup(cid, ctr, 20000 + i)
                    t1 = time.perf_counter()
                    p.teardown(cid, ctr)
                    t2 = time.perf_counter()
                times[p.name]["setup"].append((t1 - t0) * 1000)
                times[p.name]["teardown"].append((t2 - t1) * 1000)
                ctr.delete()
    finally:
        for ns in made:
            ns.delete()
        shutil.rmtree(tmp_root, ignore_errors=True)

    def med(name: str, op: str) -> float:
        return statistics.median(times[name][op])

    print(f"\nCNI driver vs bare plugin chain, {args.iterations} containers each, 1 port, ms")
    print(f"{'peer':8} {'setup med':>10} {'p90':>8} {'teardown med':>13} {'p90':>8} {'total':>8}")
    for p in ready:
        s, t = times[p.name]["setup"], times[p.name]["teardown"]
        print(
            f"{p.name:8} {med(p.name, 'setup'):10.1f} {_pct(s, 0.9):8.1f} "
            f"{med(p.name, 'teardown'):13.1f} {_pct(t, 0.9):8.1f} "
            f"{med(p.name, 'setup') + med(p.name, 'teardown'):8.1f}"
        )
    names = {p.name for p in ready}
    if {"cni", "bare"} <= names:
        rs = med("cni", "setup") / med("bare", "setup")
        rt = med("cni", "teardown") / med("bare", "teardown")
        tot = (med("cni", "setup") + med("cni", "teardown")) / (
            med("bare", "setup") + med("bare", "teardown")
        )
        print(
            f"\nratio cni/bare: setup {rs:.2f}x  teardown {rt:.2f}x  total {tot:.2f}x"
            "  (target <= 1.1)"
        )
    if {"cni", "native"} <= names:
        rs = med("cni", "setup") / med("native", "setup")
        rt = med("cni", "teardown") / med("native", "teardown")
        print(f"ratio cni/native: setup {rs:.2f}x  teardown {rt:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
