"""1,000 containers with published ports on one nyxd, side by side with podman and the floor.

Starts ``--count`` sleeping busybox containers, each publishing one host port, on one nyxd
(native driver, embedded DNS, runc), and the same on podman (runc, netavark, aardvark-dns)
up to where it manages in ``--podman-budget`` seconds, then reports:

* setup of one more container at 1 attached and at ``--count`` attached: nyx's network step
  (the driver's setup, from nyxd's own "container started" log) and its whole start, the
  in-process pyroute2 + libnftables floor of ``bench_native.py`` (its own growth with as many
  veths attached), ``podman run -d -p``;
* nyxd's resident memory, threads and descriptors, idle and with the containers (per
  container), podman's conmon processes;
* DNS queries per second (dnsperf from a container's namespace) with ``--mid`` names and with
  ``--count`` names, nyx's embedded server and aardvark-dns;
* ``nyx ps`` / ``podman ps`` latency at both levels;
* nyxd restarting with every container recorded: after a SIGKILL with all of them running (it
  re-adopts them) and after a clean stop with all of them stopped, until its socket answers;
* stopping everything (``nyx stop`` / ``podman stop -a``, ``-t 0``) and removing it.

Each engine runs in its own throwaway network namespace with a private mount namespace held
by a ``sleep`` (as in ``bench_e2e.py``): nyxd's netns and rootfs mounts survive its restart
there, and podman gets private ``/run/netns`` and ``/run/containers/networks`` (tmpfs), so
nothing of either reaches the host. nyxd raises its own ``RLIMIT_NOFILE`` to the hard limit
(about four descriptors per container). Measurements of the engines alternate. Everything is
removed at the end, also after an error or ^C. Needs root, runc, busybox-static, dnsperf;
podman optional. ``NYX_BENCH_PYSPY=DIR`` records each nyxd with py-spy (``DIR/nyxd-start*``);
``NYX_BENCH_PERF=DIR`` records nyxd's kernel and user stacks with ``perf record -g`` during
the probes at each level (``DIR/probes-<level>.data``, read with ``perf report -i``).

    .venv/bin/python bench/bench_scale.py [--count 1000] [--mid 200] [--probes 9]
        [--podman-budget 1200] [--no-podman] [--no-floor]
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_e2e import Holder, podman_cli, precompile, rss_kib
from bench_native import Floor, Runner

from nyx_cli.client._http import Client
from nyx_core.testing import Netns

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SLEEPER = ["sleep", "86400"]
NYX_SUBNET, NYX_GW = "10.233.0.0/16", "10.233.0.1"
POD_SUBNET = "10.234.0.0/16"
FIRST_PORT = 20000
PROBE_PORT = 40000
PROFILE = os.environ.get("NYX_BENCH_PYSPY")  # a directory: py-spy nyxd (shutil.which)
KPROFILE = os.environ.get("NYX_BENCH_PERF")  # a directory: perf record -g of nyxd's probes

_cleanups: list[Callable[[], None]] = []


def _cleanup() -> None:
    while _cleanups:
        fn = _cleanups.pop()
        try:
            fn()
        except Exception as exc:  # keep cleaning
            print(f"bench_scale: cleanup step failed: {exc!r}", file=sys.stderr)


def _on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def med(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def status_of(pid: int) -> dict[str, int]:
    """VmRSS (KiB), Threads and open descriptors of ``pid``."""
    out = {"rss": rss_kib(pid), "anon": 0, "threads": 0, "fds": 0}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            out["threads"] = int(line.split()[1])
        elif line.startswith("RssAnon:"):
            out["anon"] = int(line.split()[1])
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


def pss_kib(pids: Sequence[int]) -> int:
    """Summed proportional set size of ``pids`` (shared pages split between them)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def dnsperf(pid: int, server: str, qfile: Path, seconds: int) -> float:
    """Queries per second dnsperf reaches from the network namespace of process ``pid``."""
    argv = ["nsenter", f"--net=/proc/{pid}/ns/net", "--", "dnsperf", "-s", server]
    argv += ["-d", str(qfile), "-l", str(seconds), "-q", "100"]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    m = re.search(r"Queries per second:\s+([0-9.]+)", p.stdout)
    if p.returncode != 0 or m is None:
        raise RuntimeError(f"dnsperf failed: {p.stderr.strip() or p.stdout.strip()}")
    lost = re.search(r"Queries lost:\s+(\d+)", p.stdout)
    if lost and int(lost.group(1)):
        print(f"  dnsperf: {lost.group(1)} queries lost", file=sys.stderr)
    return float(m.group(1))


class Engine:
    name = ""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.count = 0  # containers started so far (named s0, s1, ...)
        self.fill_s = 0.0
        self.setup: dict[int, list[float]] = {}  # level -> one more container's setup (ms)
        self.start: dict[int, list[float]] = {}  # level -> its whole start (ms)
        self.ps: dict[int, list[float]] = {}
        self.dns: dict[int, list[float]] = {}
        self.mem: dict[int, dict[str, int]] = {}
        self.times: dict[str, float] = {}
        self.why = ""  # why the engine stopped short of --count

    def spec_port(self, i: int) -> int:
        return FIRST_PORT + i

    def time_ps(self, level: int, runs: int) -> None:
        for _ in range(runs):
            took, out = self.holder.timed(*self.cli(), "ps")
            rows = len(out.strip().splitlines()) - 1
            if rows != self.count:
                raise RuntimeError(f"{self.name} ps listed {rows} containers, not {self.count}")
            self.ps.setdefault(level, []).append(took * 1000)

    holder: Holder

    def cli(self) -> list[str]:
        raise NotImplementedError


class Nyx(Engine):
    name = "nyx"

    def __init__(self, tmp: Path, tar: Path) -> None:
        super().__init__(tmp / "nyx")
        self.ns = Netns.create("scale-nyx")
        _cleanups.append(self.ns.delete)
        self.holder = Holder(self.ns)
        _cleanups.append(self.holder.close)
        _cleanups.append(self.force_cleanup)
        self.sock = self.tmp / "run" / "nyxd.sock"
        self.log_path = tmp / "nyxd.log"
        self.client = Client(self.sock)
        self.proc: subprocess.Popen[bytes] | None = None
        self.ids: list[str] = []
        self.log_seen = 0
        self.profiles = 0
        self.spies: list[subprocess.Popen[bytes]] = []
        self.started_ms: dict[str, dict[str, float]] = {}
        self.first_start = self.start_daemon()
        self.client.load(tar)

    def cli(self) -> list[str]:
        return [str(BIN / "nyx"), "--socket", str(self.sock)]

    def start_daemon(self) -> float:
        """Start nyxd; seconds until its socket answers."""
        argv = self.holder.argv(
            str(BIN / "nyxd"),
            "--state-dir",
            str(self.tmp / "state"),
            "--run-dir",
            str(self.tmp / "run"),
            "--socket",
            str(self.sock),
            "--container-subnet",
            NYX_SUBNET,
            "--gateway-ip",
            NYX_GW,
            "--bridge",
            "nyxs0",
            "--log-level",
            "info",
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("NYXD_")}
        env.update(json.loads(os.environ.get("NYX_BENCH_NYXD_ENV", "{}")))  # experiments
        with self.log_path.open("ab") as log:
            t0 = time.perf_counter()
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env)
        if PROFILE:  # py-spy on nyxd from its first imports on, one flame graph per start
            time.sleep(0.05)  # nsenter and prlimit exec nyxd
            self.profiles += 1
            out = Path(PROFILE) / f"nyxd-start{self.profiles}.txt"
            spy = [shutil.which("py-spy") or str(BIN / "py-spy"), "record", "-r", "500"]
            spy += ["--nonblocking", "--idle", "--threads", "-f", "raw", "-o", str(out)]
            self.spies.append(
                subprocess.Popen(
                    [*spy, "--pid", str(self.proc.pid)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"nyxd exited {self.proc.returncode}:\n{tail}")
            try:
                self.client.info()
                return time.perf_counter() - t0
            except Exception:
                time.sleep(0.01)
        raise RuntimeError("nyxd did not answer in 300 s")

    @property
    def pid(self) -> int:
        """nyxd's pid (``nsenter`` and ``prlimit`` exec it)."""
        assert self.proc is not None
        return self.proc.pid

    def kill9(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(30)
        self.proc = None

    def stop_daemon(self) -> float:
        if self.proc is None:
            return 0.0
        t0 = time.perf_counter()
        os.kill(self.pid, signal.SIGTERM)
        try:
            self.proc.wait(600)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(30)
        self.proc = None
        return time.perf_counter() - t0

    def force_cleanup(self) -> None:
        """nyxd stopped cleanly, else killed, and runc's leftovers deleted."""
        if self.proc is not None:
            with_timeout = self.proc
            try:
                self.stop_daemon()
            except Exception:
                with_timeout.kill()
        root = self.tmp / "run" / "runc"
        if root.exists():
            out = subprocess.run(
                ["runc", "--root", str(root), "list", "--format", "json"],
                capture_output=True,
                text=True,
            ).stdout
            for item in json.loads(out or "null") or []:
                subprocess.run(
                    ["runc", "--root", str(root), "delete", "--force", item["id"]],
                    capture_output=True,
                )

    def log_starts(self) -> None:
        """Read nyxd's new "container started" lines: the steps of each start, in ms."""
        with self.log_path.open("rb") as f:
            f.seek(self.log_seen)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.log_seen += end
        for line in data[:end].splitlines():
            if b"container started" not in line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("msg") == "container started" and isinstance(rec.get("ms"), dict):
                self.started_ms[rec.get("container", "")] = rec["ms"]

    def fill(self, n: int, budget: float) -> None:
        def one(i: int) -> str:
            spec = {
                "image": "busybox:nyx",
                "name": f"s{i}",
                "command": SLEEPER,
                "ports": [f"{self.spec_port(i)}:80"],
            }
            return str(self.client.create(spec)["id"])

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=4) as pool:
            self.ids += pool.map(one, range(self.count, n))
        self.count = n
        self.fill_s += time.perf_counter() - t0

    def probe(self, level: int) -> None:
        spec = {
            "image": "busybox:nyx",
            "name": "probe",
            "command": SLEEPER,
            "ports": [f"{PROBE_PORT}:80"],
        }
        t0 = time.perf_counter()
        cid = str(self.client.create(spec)["id"])
        took = time.perf_counter() - t0
        self.client.request("DELETE", f"/v1/containers/{cid}", params={"force": 1})
        self.log_starts()
        self.setup.setdefault(level, []).append(self.started_ms[cid]["network"])
        self.start.setdefault(level, []).append(took * 1000)

    def measure_memory(self, level: int) -> None:
        self.mem[level] = status_of(self.pid)
        pids = self.monitors()
        self.mem[level].update(monitors=len(pids), monitor_pss=pss_kib(pids))
        self.mem[level].update(fork_server_pss=pss_kib(self.fork_servers()))

    def fork_servers(self) -> list[int]:
        """nyxd's monitor fork server (its child ``_monitor.py --server``), shared by all."""
        out = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                with contextlib.suppress(OSError, ValueError):
                    stat = (d / "stat").read_text().rpartition(")")[2].split()
                    if int(stat[1]) == self.pid and b"--server" in (d / "cmdline").read_bytes():
                        out.append(int(d.name))
        return out

    def monitors(self) -> list[int]:
        """The containers' monitor processes (their working directory is under our run dir;
        their fork server's is not)."""
        out = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                with contextlib.suppress(OSError):
                    if os.readlink(d / "cwd").startswith(str(self.tmp)):
                        out.append(int(d.name))
        return out

    def dns_pid(self) -> int:
        return int(self.client.request("GET", "/v1/containers/s0")["pid"])

    def fill_network_ms(self) -> list[float]:
        """The network step of each fill container, in the order they started."""
        self.log_starts()
        return [self.started_ms[c]["network"] for c in self.ids if c in self.started_ms]


class Podman(Engine):
    name = "podman"
    ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]

    def __init__(self, tmp: Path, tar: Path) -> None:
        super().__init__(tmp / "podman")
        self.ns = Netns.create("scale-pod")
        _cleanups.append(self.ns.delete)
        self.holder = Holder(self.ns)
        _cleanups.append(self.holder.close)
        # netavark's /run/containers/networks (ipam.db, aardvark-dns) and podman's /run/netns
        # mounts stay in the holder's mount namespace: nothing of them on the host
        Path("/run/containers/networks").mkdir(parents=True, exist_ok=True)
        for d in ("/run/containers/networks", "/run/netns"):
            self.holder.run("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", d)
        _cleanups.append(self.close)
        self.holder.run(*self.cli(), "load", "-i", str(tar))
        self.holder.run(*self.cli(), "network", "create", "--subnet", POD_SUBNET, "scalenet")

    def cli(self) -> list[str]:
        return podman_cli(self.tmp)

    def run_args(self, name: str, port: int) -> list[str]:
        return [
            "run",
            "-d",
            *self.ULIMITS,
            "--network",
            "scalenet",
            "--name",
            name,
            "-p",
            f"{port}:80",
            "busybox:nyx",
            *SLEEPER,
        ]

    def fill(self, n: int, budget: float) -> None:
        """``podman run -d -p`` (4 at a time) until ``n`` run or ``budget`` seconds pass."""
        if self.why:
            return
        t0 = time.perf_counter()
        deadline = time.monotonic() + budget

        def one(i: int) -> bool:
            if time.monotonic() > deadline:
                return False
            self.holder.run(*self.cli(), *self.run_args(f"s{i}", self.spec_port(i)))
            return True

        try:
            with ThreadPoolExecutor(max_workers=4) as pool:
                done = list(pool.map(one, range(self.count, n)))
        except RuntimeError as exc:
            self.why = f"podman run failed: {exc}"
            done = []
        self.count = int(self.holder.run(*self.cli(), "ps", "-q").count("\n"))
        if not all(done) and not self.why:
            self.why = f"stopped at {self.count} containers: the --podman-budget ran out"
        self.fill_s += time.perf_counter() - t0

    def probe(self, level: int) -> None:
        t0 = time.perf_counter()
        self.holder.run(*self.cli(), *self.run_args("probe", PROBE_PORT))
        took = time.perf_counter() - t0
        self.holder.run(*self.cli(), "rm", "-f", "-t", "0", "probe")
        self.start.setdefault(level, []).append(took * 1000)

    def conmons(self) -> list[int]:
        out = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                if (d / "comm").read_text().strip() != "conmon":
                    continue
                if str(self.tmp) in (d / "cmdline").read_text(errors="replace"):
                    out.append(int(d.name))
            except OSError:
                continue
        return out

    def measure_memory(self, level: int) -> None:
        pids = self.conmons()
        self.mem[level] = {"pss": pss_kib(pids), "conmons": len(pids)}

    def dns_pid(self) -> int:
        out = self.holder.run(*self.cli(), "inspect", "-f", "{{.State.Pid}}", "s0")
        return int(out.strip())

    def dns_server(self) -> str:
        out = self.holder.run(*self.cli(), "network", "inspect", "scalenet")
        return str(json.loads(out)[0]["subnets"][0]["gateway"])

    def close(self) -> None:
        self.holder.run(*self.cli(), "rm", "-af", "-t", "0", check=False)
        self.holder.run(*self.cli(), "system", "reset", "-f", check=False)
        self.holder.close()
        subprocess.run(["umount", "-R", str(self.tmp)], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


class FloorPeer:
    """bench_native's in-process floor with ``size`` container namespaces of its own."""

    name = "floor"

    def __init__(self, size: int) -> None:
        self.runner = Runner(Floor(), size)
        _cleanups.append(self.runner.close)

    def probe(self, level: int) -> None:
        self.runner.attach(level)
        self.runner.measure(level)

    @property
    def setup(self) -> dict[int, list[float]]:
        return self.runner.ups


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.nyx: Nyx | None = None
        self.pod: Podman | None = None
        self.floor: FloorPeer | None = None
        self.pod_why = ""
        self.restart: dict[str, float] = {}
        self.adopted = 0
        self.fill_ms: list[float] = []

    def engines(self) -> list[Engine]:
        return [e for e in (self.nyx, self.pod) if e is not None]

    def probes(self, level: int) -> None:
        """One more container set up and removed ``--probes`` times, the peers alternating.

        With ``NYX_BENCH_PERF=DIR``, ``perf record -g`` samples nyxd's threads (kernel
        stacks included) during them: ``DIR/probes-<level>.data``."""
        peers: list[Any] = [*self.engines(), *([self.floor] if self.floor else [])]
        rec = None
        if KPROFILE and self.nyx is not None and shutil.which("perf"):
            out = Path(KPROFILE) / f"probes-{level}.data"
            argv = ["perf", "record", "-q", "-g", "-p", str(self.nyx.pid), "-o", str(out)]
            rec = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)  # attached
        try:
            for i in range(self.args.probes):
                for p in peers if i % 2 == 0 else reversed(peers):
                    if isinstance(p, Podman) and p.why:
                        continue
                    p.probe(level)
        finally:
            if rec is not None:
                rec.send_signal(signal.SIGINT)
                rec.wait(60)

    def qfile(self, n: int) -> Path:
        path = self.tmp / f"names-{n}.txt"
        path.write_text("".join(f"s{i} A\n" for i in range(n)))
        return path

    def measure(self, level: int) -> None:
        print(f"  measuring at {level} containers", file=sys.stderr)
        a = self.args
        for e in self.engines():
            e.time_ps(level, 1)  # warm-up
            e.ps[level].clear()
        for i in range(a.ps_runs):
            for e in self.engines() if i % 2 == 0 else reversed(self.engines()):
                e.time_ps(level, 1)
        for e in self.engines():
            e.measure_memory(level)
        targets: list[tuple[Engine, int, str, Path]] = []
        for e in self.engines():
            if e.count:
                server = NYX_GW if isinstance(e, Nyx) else self.pod.dns_server()  # type: ignore[union-attr]
                targets.append((e, e.dns_pid(), server, self.qfile(e.count)))
        for i in range(a.dns_rounds):
            for e, pid, server, q in targets if i % 2 == 0 else reversed(targets):
                e.dns.setdefault(level, []).append(dnsperf(pid, server, q, a.dns_seconds))

    def run(self) -> None:
        a = self.args
        tar = self.tmp / "busybox.tar"
        subprocess.run(
            [sys.executable, str(ROOT / "examples" / "busybox_image.py"), str(tar)],
            check=True,
            capture_output=True,
        )
        self.nyx = Nyx(self.tmp, tar)
        self.restart["first start, nothing recorded"] = self.nyx.first_start
        if not a.no_podman and shutil.which("podman") is None:
            self.pod_why = "podman not installed (apt-get install podman)"
        elif a.no_podman:
            self.pod_why = "skipped (--no-podman)"
        else:
            self.pod = Podman(self.tmp, tar)
        if not a.no_floor:
            print(f"  floor: creating {a.count} namespaces", file=sys.stderr)
            self.floor = FloorPeer(a.count)
        time.sleep(1)
        self.nyx.measure_memory(0)
        self.probes(1)
        levels = [lv for lv in (a.mid, a.count) if 0 < lv <= a.count]
        budget_end = time.monotonic() + a.podman_budget
        for level in dict.fromkeys(levels):
            print(f"  starting {level} containers", file=sys.stderr)
            self.nyx.fill(level, 0)
            if self.pod is not None:
                self.pod.fill(level, max(0.0, budget_end - time.monotonic()))
            time.sleep(2)
            self.measure(level)
            self.probes(level)
        self.fill_ms = self.nyx.fill_network_ms()
        self.stop_all()
        self.restarts()

    def stop_all(self) -> None:
        """``stop -t 0`` of everything (nyx: every id on one command line, podman: -a), then
        ``rm`` of everything."""
        for e in self.engines():
            if isinstance(e, Nyx):
                argv = [*e.cli(), "stop", "-t", "0", *e.ids]
            else:
                argv = [*e.cli(), "stop", "-a", "-t", "0"]
            print(f"  {e.name}: stopping {e.count} containers", file=sys.stderr)
            e.times["stop all"] = long_run(e.holder, argv)
        for e in self.engines():
            argv = [*e.cli(), "rm", *(e.ids if isinstance(e, Nyx) else ["-a"])]
            e.times["rm all"] = long_run(e.holder, argv)

    def restarts(self) -> None:
        """nyxd restarted with every container recorded: killed with all of them running (it
        re-adopts them), then stopped cleanly (its shutdown stops them) and started with
        all of them stopped."""
        nyx = self.nyx
        assert nyx is not None
        n, nyx.count, nyx.ids = nyx.count, 0, []
        print(f"  nyx: starting {n} containers again", file=sys.stderr)
        t0 = time.perf_counter()
        nyx.fill(n, 0)
        nyx.times["started again"] = time.perf_counter() - t0
        print(f"  nyxd: SIGKILL with {n} running, start again", file=sys.stderr)
        nyx.kill9()
        self.restart["after SIGKILL, all running"] = nyx.start_daemon()
        rows = nyx.client.request("GET", "/v1/containers")
        self.adopted = len(rows)
        if self.adopted != n:
            print(f"  nyxd re-adopted {self.adopted} of {n} containers", file=sys.stderr)
        nyx.mem["restarted"] = status_of(nyx.pid)
        print("  nyxd: SIGTERM (it stops them all), start again", file=sys.stderr)
        self.restart["shutdown, all running (re-adopted)"] = nyx.stop_daemon()
        self.restart["after a clean stop, all stopped"] = nyx.start_daemon()
        long_run(nyx.holder, [*nyx.cli(), "rm", *nyx.ids])
        self.restart["shutdown, empty"] = nyx.stop_daemon()


def long_run(holder: Holder, argv: list[str]) -> float:
    """Seconds ``argv`` takes in ``holder``'s namespaces (no timeout of two minutes)."""
    t0 = time.perf_counter()
    p = subprocess.run(holder.argv(*argv), capture_output=True, text=True, timeout=3600)
    took = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}...: {p.stderr.strip()[-2000:]}")
    return took


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b and b == b and a == a else "-"


def report(b: Bench) -> None:
    a = b.args
    nyx = b.nyx
    assert nyx is not None
    pod = b.pod
    fl = b.floor
    n, mid = a.count, a.mid
    top = max(nyx.setup)
    print(
        f"\nbench_scale: {n} containers on one nyxd, each publishing one host port (sleeping "
        f"busybox); medians of {a.probes} probes (ms) unless said; podman "
        f"{'reached ' + str(pod.count) if pod else '-'}"
    )
    print(f"\n{'setup of one more container':<44} {'at 1':>9} {f'at {top}':>9} {'growth':>7}")

    def row(label: str, data: dict[int, list[float]], hi: int) -> None:
        lo_v, hi_v = med(data.get(1, [])), med(data.get(hi, []))
        print(f"{label:<44} {lo_v:9.2f} {hi_v:9.2f} {ratio(hi_v, lo_v):>7}")

    row("nyx: network step (the driver's setup)", nyx.setup, top)
    if fl is not None:
        row("floor: pyroute2 + libnftables in-process", fl.setup, max(fl.setup))
    row("nyx: whole start (API call, runc included)", nyx.start, top)
    if pod is not None and pod.start:
        row(f"podman run -d -p (at {max(pod.start)})", pod.start, max(pod.start))
    fill = b.fill_ms
    if len(fill) >= 100:
        k = max(1, len(fill) // 10)
        first, last = med(fill[:k]), med(fill[-k:])
        print(
            f"{'nyx: network step during the fill, first/last ' + str(k):<44} {first:9.2f} "
            f"{last:9.2f} {ratio(last, first):>7}"
        )

    print(f"\n{'':<44} {'nyx':>12} {'podman':>12} {'nyx/podman':>11}")

    def cmp(label: str, ours: float, theirs: float | None, fmt: str = "{:12.1f}") -> None:
        t = fmt.format(theirs) if theirs is not None and theirs == theirs else f"{'-':>12}"
        r = ratio(ours, theirs) if theirs else "-"
        print(f"{label:<44} {fmt.format(ours)} {t} {r:>11}")

    for lv in dict.fromkeys((mid, n)):
        pl = pod.count if pod is not None and lv == n else lv
        cmp(
            f"ps, {lv} containers (podman {pl}) ms",
            med(nyx.ps.get(lv, [])),
            med(pod.ps.get(lv, [])) if pod else None,
        )
    for lv in dict.fromkeys((mid, n)):
        pl = pod.count if pod is not None and lv == n else lv
        cmp(
            f"DNS qps, {lv} names (podman {pl}: aardvark)",
            med(nyx.dns.get(lv, [])),
            med(pod.dns.get(lv, [])) if pod else None,
            "{:12.0f}",
        )
    if mid in nyx.dns and n in nyx.dns:
        dns_ratio = ratio(med(nyx.dns[n]), med(nyx.dns[mid]))
        print(f"  nyx DNS qps with {n} names / with {mid}: {dns_ratio}")
    cmp(
        f"started {n} (podman {pod.count if pod else '-'}), s",
        nyx.fill_s,
        pod.fill_s if pod else None,
    )
    for key in ("stop all", "rm all"):
        cmp(
            f"{key} ({'nyx stop -t 0' if key == 'stop all' else 'nyx rm'} ids), s",
            nyx.times.get(key, float("nan")),
            pod.times.get(key) if pod else None,
            "{:12.2f}",
        )
    again = nyx.times.get("started again", float("nan"))
    print(f"{'nyx: ' + str(n) + ' started again (after rm all), s':<44} {again:12.2f}")

    print("\nnyxd memory (VmRSS; RssAnon: not the mapped files), threads, descriptors")
    idle = nyx.mem[0]["rss"]
    for lv, m in nyx.mem.items():
        per = ""
        if isinstance(lv, int) and lv:
            per = f"  ({(m['rss'] - idle) / lv:.0f} KiB per container)"
        print(
            f"  {str(lv) + ' containers' if isinstance(lv, int) else lv:<22} "
            f"{m['rss'] / 1024:7.1f} MiB (anonymous {m['anon'] / 1024:5.1f})  "
            f"{m['threads']:5d} threads  {m['fds']:5d} fds{per}"
        )
    for lv, m in nyx.mem.items():
        if m.get("monitors"):
            each = m["monitor_pss"] / m["monitors"]
            mib = m["monitor_pss"] / 1024
            n_mon = m["monitors"]
            server = m.get("fork_server_pss", 0)
            print(
                f"  nyx at {lv}: {n_mon} monitor processes, PSS {mib:.1f} MiB ({each:.0f} KiB each)"
                f"; their fork server {server} KiB ({(m['monitor_pss'] + server) / n_mon:.0f}"
                " KiB each with it)"
            )
    if pod is not None:
        for lv, m in pod.mem.items():
            per = f" ({m['pss'] / max(1, m['conmons']):.0f} KiB each)" if m["conmons"] else ""
            pss = m["pss"] / 1024
            print(f"  podman at {lv}: {m['conmons']} conmon processes, PSS {pss:.1f} MiB{per}")

    print(f"\nnyxd restart with {n} containers recorded (until its socket answers), s")
    for key, took in b.restart.items():
        print(f"  {key:<40} {took:6.2f}")
    print(f"  containers re-adopted after the SIGKILL: {b.adopted} of {n}")
    if pod is None:
        print(f"podman: {b.pod_why}")
    elif pod.why:
        print(f"podman: {pod.why}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--mid", type=int, default=200, help="the smaller level (DNS, ps)")
    ap.add_argument("--probes", type=int, default=9)
    ap.add_argument("--ps-runs", type=int, default=10)
    ap.add_argument("--dns-rounds", type=int, default=3)
    ap.add_argument("--dns-seconds", type=int, default=5)
    ap.add_argument("--podman-budget", type=float, default=1200.0, help="seconds for its fill")
    ap.add_argument("--no-podman", action="store_true")
    ap.add_argument("--no-floor", action="store_true")
    ap.add_argument("--keep-log", type=Path, help="copy nyxd's log there")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_scale: needs root")
    for tool in ("runc", "busybox", "dnsperf", "prlimit", "nsenter"):
        if shutil.which(tool) is None:
            sys.exit(f"bench_scale: needs {tool}")
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    atexit.register(_cleanup)
    precompile()
    tmp = Path(tempfile.mkdtemp(prefix="nyx-bench-scale-"))
    _cleanups.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
    bench = Bench(args, tmp)
    try:
        bench.run()
    finally:
        if args.keep_log and bench.nyx is not None and bench.nyx.log_path.exists():
            shutil.copy(bench.nyx.log_path, args.keep_log)
        _cleanup()
    report(bench)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
