"""Embedded DNS vs aardvark-dns vs dnsmasq: dnsperf qps and p99, side by side in one run.

Run as root: ``.venv/bin/python bench/bench_dns.py [--duration 10] [--rounds 1]``.

Everything runs inside one throwaway network namespace this script creates
(``nyxt-bench-<pid>-<n>``): the servers listen on 10.231.0.1 (one port each), dnsperf
sends from 10.231.0.2, which every server knows as a registered "client" container.

Scenarios:

* ``names``: A queries for 200 container names (``web0`` .. ``web199``) the servers
  answer themselves.
* ``forward``: A queries for 200 names none of them knows, forwarded to a fake upstream:
  a dnsmasq on 127.0.0.1:53 in the namespace answering every name with 203.0.113.7 (TTL
  300 s). Caches off: nyx with ``cache_size=0``, the dnsmasq peer with
  ``--cache-size=0``, so every query goes upstream (aardvark-dns has no cache).
* ``repeat``: A queries for 20 external names asked over and over, from the same fake
  upstream (TTL 300 s), with the caches on as everyone runs them: nyx's forward cache and
  dnsmasq's default cache answer them without asking upstream.

Per scenario all three servers run at once. Throughput: ``--rounds`` rounds, in each
every server gets one dnsperf run (``--duration`` s, 100 outstanding) back to back, the
order rotated from round to round; the median qps per server is printed with its range,
and the qps ratio nyx/peer is the median of the per-round ratios (the two runs of a
pair are seconds apart, so they share the machine's background load; medians of each
server alone mix quiet and busy minutes). Latency: ``--latency-slices`` slices of
``--slice-seconds`` at ``--rate`` qps offered per server, interleaved with the other
servers' slices so background load hits all of them alike; p50/p99 of the pooled
per-query latencies (dnsperf ``-v``), and the range of the p99 ratio over blocks of 5
slices. The ratios printed at the end are nyx over each peer (qps: higher is better;
p99: lower is better).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GATEWAY = "10.231.0.1"
CLIENT = "10.231.0.2"
SUBNET = "10.231.0.0/16"
UPSTREAM_ANSWER = "203.0.113.7"
AARDVARK = shutil.which("aardvark-dns") or "/usr/lib/podman/aardvark-dns"
PORTS = {"nyx": 5301, "aardvark": 5302, "dnsmasq": 5303}
REPEAT_NAMES = 20


def rotate(items: list[str], n: int) -> list[str]:
    k = n % len(items)
    return items[k:] + items[:k]


def container_ip(i: int) -> str:
    return f"10.231.{1 + i // 250}.{1 + i % 250}"


# --------------------------------------------------------------------------- nyx server


def serve_nyx(port: int, resolv: str, names: int, cache_size: int) -> None:
    """Child mode (already inside the namespace): run the provider until stdin closes."""
    import ipaddress

    from nyx_core import NyxSettings
    from nyx_dns_embedded import EmbeddedDns, EmbeddedDnsSettings

    run_dir = tempfile.mkdtemp(prefix="nyx-bench-dns-")
    settings = NyxSettings(
        run_dir=run_dir,
        state_dir=run_dir,
        container_subnet=SUBNET,
        gateway_ip=GATEWAY,
        dns_port=port,
    )
    provider = EmbeddedDns(
        EmbeddedDnsSettings(upstream_resolv_conf=Path(resolv), cache_size=cache_size)
    )
    provider.start(settings)
    provider.register("client", "client", [ipaddress.ip_address(CLIENT)], [], ["bench"])
    for i in range(names):
        provider.register(
            f"c{i}", f"web{i}", [ipaddress.ip_address(container_ip(i))], [], ["bench"]
        )
    print("ready", flush=True)
    try:
        sys.stdin.read()
    finally:
        provider.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


# --------------------------------------------------------------------------- harness


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="nyx-bench-dns-"))
        self.ns = f"nyxt-bench-{os.getpid()}-0"
        self.etc_netns = Path("/etc/netns") / self.ns
        self.procs: list[subprocess.Popen[str]] = []
        self.pids: list[int] = []

    def sh(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, check=check, text=True, capture_output=True)

    def nsexec(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def setup(self) -> None:
        self.sh("ip", "netns", "add", self.ns)
        self.sh("ip", "-n", self.ns, "link", "set", "lo", "up")
        for addr in (GATEWAY, CLIENT):
            self.sh("ip", "-n", self.ns, "addr", "add", f"{addr}/16", "dev", "lo")
        n = self.args.names
        # query files
        (self.tmp / "names.txt").write_text("".join(f"web{i} A\n" for i in range(n)))
        (self.tmp / "forward.txt").write_text("".join(f"ext{i}.example.test A\n" for i in range(n)))
        (self.tmp / "repeat.txt").write_text(
            "".join(f"rep{i}.example.test A\n" for i in range(REPEAT_NAMES))
        )
        # resolv.conf pointing at the fake upstream (aardvark reads /etc/resolv.conf, which
        # `ip netns exec` bind-mounts from /etc/netns/<ns>/resolv.conf)
        resolv = "nameserver 127.0.0.1\n"
        (self.tmp / "resolv.conf").write_text(resolv)
        self.etc_netns.mkdir(parents=True, exist_ok=True)
        (self.etc_netns / "resolv.conf").write_text(resolv)
        # aardvark config: one network file, gateway first
        adir = self.tmp / "aardvark"
        adir.mkdir()
        lines = [GATEWAY, f"client {CLIENT}  client"]
        lines += [f"c{i} {container_ip(i)}  web{i}" for i in range(n)]
        (adir / "bench").write_text("\n".join(lines) + "\n")
        # dnsmasq hosts file
        hosts = [f"{CLIENT} client"] + [f"{container_ip(i)} web{i}" for i in range(n)]
        (self.tmp / "hosts").write_text("\n".join(hosts) + "\n")
        # the fake upstream
        self.spawn(
            "dnsmasq",
            "-k",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "-p",
            "53",
            f"--address=/#/{UPSTREAM_ANSWER}",
            "--local-ttl=300",
            "--pid-file=",
            "--user=root",
        )
        self.wait_port("127.0.0.1", 53, "x.example.test")

    def spawn(self, *argv: str, stdin: int | None = None) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            self.nsexec(*argv),
            text=True,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[str]) -> None:
        if proc.poll() is None:
            if proc.stdin is not None:
                proc.stdin.close()
            else:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    def wait_port(self, host: str, port: int, name: str) -> None:
        for _ in range(100):
            r = self.sh(
                *self.nsexec(
                    "dig",
                    "+short",
                    "+time=1",
                    "+tries=1",
                    f"@{host}",
                    "-p",
                    str(port),
                    "-b",
                    CLIENT if host == GATEWAY else "127.0.0.1",
                    name,
                ),
                check=False,
            )
            if r.returncode == 0 and r.stdout.strip():
                return
            time.sleep(0.1)
        raise RuntimeError(f"server on {host}:{port} does not answer {name}")

    # ------------------------------------------------------------------ servers

    def start_server(self, which: str, scenario: str) -> object:
        port = PORTS[which]
        probe = "web0" if scenario == "names" else "probe.example.test"
        if which == "nyx":
            proc = self.spawn(
                sys.executable,
                os.path.abspath(__file__),
                "--serve-nyx",
                str(port),
                str(self.tmp / "resolv.conf"),
                "--names",
                str(self.args.names),
                "--nyx-cache-size",
                "0" if scenario == "forward" else "4096",
                stdin=subprocess.PIPE,
            )
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("nyx server did not start")
            handle: object = proc
        elif which == "aardvark":
            adir = self.tmp / "aardvark"
            self.sh(*self.nsexec(AARDVARK, "--config", str(adir), "-p", str(port), "run"))
            pid = int((adir / "aardvark.pid").read_text().strip())
            self.pids.append(pid)
            handle = pid
        else:
            argv = [
                "dnsmasq",
                "-k",
                "--no-hosts",
                "--bind-interfaces",
                f"--listen-address={GATEWAY}",
                "-p",
                str(port),
                f"--addn-hosts={self.tmp / 'hosts'}",
                "--pid-file=",
                "--user=root",
            ]
            argv += ["--no-resolv"]
            if scenario == "forward":
                argv += ["--server=127.0.0.1", "--cache-size=0"]
            elif scenario == "repeat":
                argv += ["--server=127.0.0.1"]  # default cache (150 names)
            handle = self.spawn(*argv)
        self.wait_port(GATEWAY, port, probe)
        return handle

    def stop_server(self, handle: object) -> None:
        if isinstance(handle, int):
            try:
                os.kill(handle, signal.SIGTERM)
            except ProcessLookupError:
                pass
            for _ in range(50):
                try:
                    os.kill(handle, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            if handle in self.pids:
                self.pids.remove(handle)
        else:
            assert isinstance(handle, subprocess.Popen)
            self.stop(handle)

    # ------------------------------------------------------------------ dnsperf

    def dnsperf(self, port: int, qfile: Path, *extra: str) -> str:
        argv = self.nsexec(
            "dnsperf", "-s", GATEWAY, "-p", str(port), "-a", CLIENT, "-d", str(qfile), *extra
        )
        r = subprocess.run(argv, check=False, text=True, capture_output=True)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr or r.stdout}")
        return r.stdout

    def throughput(self, which: str, scenario: str) -> tuple[float, float]:
        """Max qps (``--duration`` s, 100 outstanding) and queries lost."""
        qfile = self.tmp / f"{scenario}.txt"
        out = self.dnsperf(PORTS[which], qfile, "-l", str(self.args.duration), "-q", "100")
        qps = lost = 0.0
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("Queries per second:"):
                qps = float(line.split(":")[1])
            elif line.startswith("Queries lost:"):
                lost = float(line.split(":")[1].split()[0])
        return qps, lost

    def latencies(self, which: str, scenario: str) -> tuple[list[float], int, int]:
        """Per-query latencies (ms) of one slice at ``--rate`` qps, the count of answers
        that are not NOERROR, and of queries never answered (dnsperf's ``> T`` lines)."""
        qfile = self.tmp / f"{scenario}.txt"
        out = self.dnsperf(
            PORTS[which], qfile, "-l", str(self.args.slice_seconds), "-Q", str(self.args.rate), "-v"
        )
        lat, bad, timeouts = [], 0, 0
        for line in out.splitlines():
            if line.startswith("> "):
                parts = line.split()
                if parts[1] == "T":
                    timeouts += 1
                    continue
                lat.append(float(parts[-1]) * 1000)
                if parts[1] != "NOERROR":
                    bad += 1
        return lat, bad, timeouts

    def cleanup(self) -> None:
        for proc in list(self.procs):
            self.stop(proc)
        for pid in list(self.pids):
            self.stop_server(pid)
        self.sh("ip", "netns", "del", self.ns, check=False)
        shutil.rmtree(self.etc_netns, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=10, help="seconds per max-qps run")
    ap.add_argument("--latency-slices", type=int, default=20, help="latency slices per server")
    ap.add_argument("--slice-seconds", type=int, default=1, help="seconds per latency slice")
    ap.add_argument("--rate", type=int, default=1000, help="qps offered in the latency run")
    ap.add_argument("--rounds", type=int, default=5, help="repeat and report medians")
    ap.add_argument("--names", type=int, default=200, help="container names")
    ap.add_argument("--servers", default="nyx,aardvark,dnsmasq")
    ap.add_argument("--scenarios", default="names,forward,repeat")
    ap.add_argument("--serve-nyx", nargs=2, metavar=("PORT", "RESOLV_CONF"), help=argparse.SUPPRESS)
    ap.add_argument("--nyx-cache-size", type=int, default=4096, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_nyx:
        serve_nyx(int(args.serve_nyx[0]), args.serve_nyx[1], args.names, args.nyx_cache_size)
        return 0
    if os.geteuid() != 0:
        print("bench_dns: needs root (network namespaces)", file=sys.stderr)
        return 1
    servers = [s for s in args.servers.split(",") if s]
    scenarios = [s for s in args.scenarios.split(",") if s]
    bench = Bench(args)
    load = os.getloadavg()
    qpss: dict[tuple[str, str], list[float]] = {}
    losts: dict[tuple[str, str], list[float]] = {}
    lats: dict[tuple[str, str], list[float]] = {}
    slices: dict[tuple[str, str], list[list[float]]] = {}
    bads: dict[tuple[str, str], int] = {}
    timeouts: dict[tuple[str, str], int] = {}
    try:
        bench.setup()
        for scenario in scenarios:
            # all servers run at once (idle ones cost nothing); every phase rotates the
            # order so each server sees the same background noise
            handles = [bench.start_server(which, scenario) for which in servers]
            try:
                for rnd in range(args.rounds):
                    for which in rotate(servers, rnd):
                        qps, lost = bench.throughput(which, scenario)
                        qpss.setdefault((scenario, which), []).append(qps)
                        losts.setdefault((scenario, which), []).append(lost)
                        print(f"  {scenario:8} {which:9} qps {qps:9.0f}", file=sys.stderr)
                for sl in range(args.latency_slices):
                    for which in rotate(servers, sl):
                        lat, bad, unanswered = bench.latencies(which, scenario)
                        lats.setdefault((scenario, which), []).extend(lat)
                        slices.setdefault((scenario, which), []).append(lat)
                        bads[(scenario, which)] = bads.get((scenario, which), 0) + bad
                        timeouts[(scenario, which)] = (
                            timeouts.get((scenario, which), 0) + unanswered
                        )
            finally:
                for handle in handles:
                    bench.stop_server(handle)
    finally:
        bench.cleanup()

    def quantile(values: list[float], q: float) -> float:
        data = sorted(values)
        return data[min(len(data) - 1, int(len(data) * q))] if data else float("nan")

    def pct(key: tuple[str, str], q: float) -> float:
        return quantile(lats.get(key, []), q)

    def qps_of(key: tuple[str, str]) -> float:
        return statistics.median(qpss[key])

    end_load = os.getloadavg()
    print(
        f"\nDNS, {args.names} names. qps: dnsperf {args.duration} s, 100 outstanding, "
        f"{args.rounds} rounds (each server once per round, order rotated); latency: "
        f"{args.latency_slices} interleaved {args.slice_seconds} s slices at {args.rate} qps, "
        f"pooled. Load average {load[0]:.2f} at the start, {end_load[0]:.2f} at the end."
    )
    head = ("scenario", "server", "qps", "min-max", "p50 ms", "p99 ms", "samples", "lost", "!NOERR")
    print("{:9} {:9} {:>8} {:>15} {:>7} {:>7} {:>7} {:>5} {:>6}".format(*head))
    # lost: median over the qps runs + every query of the latency slices never answered
    for scenario in scenarios:
        for which in servers:
            key = (scenario, which)
            spread = f"{min(qpss[key]) / 1000:.0f}k-{max(qpss[key]) / 1000:.0f}k"
            print(
                f"{scenario:9} {which:9} {qps_of(key):8.0f} {spread:>15} {pct(key, 0.5):7.3f} "
                f"{pct(key, 0.99):7.3f} {len(lats.get(key, [])):7d} "
                f"{statistics.median(losts[key]) + timeouts.get(key, 0):5.0f} "
                f"{bads.get(key, 0):6d}"
            )
    if "nyx" in servers:
        print(
            "\nratios nyx / peer (qps: higher is better, the median of the per-round ratios, "
            "each of a pair measured back to back, and their range; p99: lower is better, "
            "pooled, and its range over blocks of 5 slices)"
        )
        for scenario in scenarios:
            for peer in servers:
                if peer == "nyx":
                    continue
                mine, theirs = (scenario, "nyx"), (scenario, peer)
                per_round = [
                    a / max(b, 1e-9) for a, b in zip(qpss[mine], qpss[theirs], strict=True)
                ]
                q = statistics.median(per_round)
                p = pct(mine, 0.99) / max(pct(theirs, 0.99), 1e-9)
                blocks = []
                a_sl, b_sl = slices.get(mine, []), slices.get(theirs, [])
                for i in range(0, len(a_sl), 5):
                    a = quantile([x for sl in a_sl[i : i + 5] for x in sl], 0.99)
                    b = quantile([x for sl in b_sl[i : i + 5] for x in sl], 0.99)
                    blocks.append(a / max(b, 1e-9))
                p_range = f"{min(blocks):.2f}-{max(blocks):.2f}" if blocks else "-"
                print(
                    f"{scenario:9} nyx/{peer:9} qps {q:5.2f}x "
                    f"({min(per_round):.2f}-{max(per_round):.2f})   "
                    f"p99 {p:5.2f}x ({p_range})"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
