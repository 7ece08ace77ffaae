"""End to end: ``nyx run -d -p 8080:80`` until the port answers, then stop + rm, and ``nyx ps``
with 50 containers, side by side with podman (runc, netavark); where the time of a
``nyx run -d -p`` goes; nyxd's resident memory with 100 containers.

Everything runs inside throwaway namespaces: one "host" netns per engine, each with a
long-lived private mount namespace (``nsenter --net ... unshare --mount --propagation slave``)
that the engine's commands join (``nyx``'s too, so both pay the same ``nsenter``). Both
engines are up at once and their measurements alternate, so a burst of load from elsewhere
on the machine hits both. Needs root, runc, busybox-static; podman is optional.

    .venv/bin/python bench/bench_e2e.py [--runs 10] [--ps-containers 50] [--containers 100]
                                        [--no-podman]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from nyx_cli.client._http import Client
from nyx_core.testing import Netns, entered

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HTTPD = ["httpd", "-f", "-p", "80", "-h", "/www"]
SLEEPER = ["sleep", "3600"]
#: what the breakdown shows, and the steps of nyxd's "container started" log it sums
STEPS = {
    "netns+network": ("netns", "network", "sysctls"),
    "dns+etc": ("dns", "etc"),
    "rootfs+bundle": ("rootfs",),
    "runc": ("runtime",),
}


def podman_cli(b: Path) -> list[str]:
    """podman with its own storage, run root and network config under ``b`` (cgroupfs, runc,
    no events): the peer of every bench that drives podman."""
    return [
        "podman",
        "--root",
        str(b / "root"),
        "--runroot",
        str(b / "runroot"),
        "--tmpdir",
        str(b / "tmp"),
        "--cgroup-manager",
        "cgroupfs",
        "--runtime",
        "runc",
        "--network-config-dir",
        str(b / "net"),
        "--storage-driver",
        "overlay",
        "--events-backend",
        "none",
    ]


class Holder:
    """A process holding a private mount namespace inside ``ns``; commands join both."""

    def __init__(self, ns: Netns) -> None:
        self.ns = ns
        self.proc = subprocess.Popen(
            [
                "nsenter",
                f"--net={ns.path}",
                "--",
                "unshare",
                "--mount",
                "--propagation",
                "slave",
                "sleep",
                "infinity",
            ]
        )
        time.sleep(0.2)

    def argv(self, *cmd: str) -> list[str]:
        return ["nsenter", "-t", str(self.proc.pid), "--mount", "--net", "--", *cmd]

    def run(self, *cmd: str, env: dict[str, str] | None = None, check: bool = True) -> str:
        p = subprocess.run(self.argv(*cmd), capture_output=True, text=True, env=env, timeout=120)
        if check and p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {p.stderr.strip()}")
        return p.stdout

    def timed(self, *cmd: str) -> tuple[float, str]:
        """Wall time of one command (its output must not matter to the caller's timing)."""
        t0 = time.perf_counter()
        p = subprocess.run(self.argv(*cmd), capture_output=True, text=True, timeout=120)
        return time.perf_counter() - t0, p.stdout

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def http_ok(ns: Netns, port: int) -> bool:
    with entered(ns):
        s = socket.socket()
    s.settimeout(0.5)
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        return b"hello from nyx" in data
    except OSError:
        return False
    finally:
        s.close()


def until_answers(ns: Netns, port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http_ok(ns, port):
            return
        time.sleep(0.003)
    raise RuntimeError(f"port {port} did not answer in {timeout}s")


class Engine:
    """One engine in its namespaces: run -d -p until it answers, stop + rm, ps."""

    name = ""

    def __init__(self, ns: Netns) -> None:
        self.ns = ns
        self.holder = Holder(ns)
        self.ups: list[float] = []
        self.cmds: list[float] = []  # the ``run -d`` command alone
        self.downs: list[float] = []
        self.ps: list[float] = []

    def cli(self) -> list[str]:
        raise NotImplementedError

    def run_args(self) -> list[str]:
        return ["run", "-d", "-p", "8080:80", "busybox:nyx", *HTTPD]

    def cycle(self, record: bool = True) -> None:
        t0 = time.perf_counter()
        out = self.holder.run(*self.cli(), *self.run_args())
        t1 = time.perf_counter()
        until_answers(self.ns, 8080)
        t2 = time.perf_counter()
        cid = out.strip()
        self.holder.run(*self.cli(), "stop", "-t", "0", cid)
        self.holder.run(*self.cli(), "rm", cid)
        t3 = time.perf_counter()
        if http_ok(self.ns, 8080):
            raise RuntimeError(f"{self.name}: port still answers after stop + rm")
        if record:
            self.cmds.append(t1 - t0)
            self.ups.append(t2 - t0)
            self.downs.append(t3 - t2)

    def time_ps(self, expect: int) -> None:
        took, out = self.holder.timed(*self.cli(), "ps")
        rows = len(out.strip().splitlines()) - 1
        if rows != expect:
            raise RuntimeError(f"{self.name} ps listed {rows} containers, not {expect}")
        self.ps.append(took)


class Nyx(Engine):
    name = "nyx"

    def __init__(self, tmp: Path, tar: Path) -> None:
        super().__init__(Netns.create("bench-e2e"))
        self.tmp = tmp
        self.sock = tmp / "nyx" / "run" / "nyxd.sock"
        self.log_path = tmp / "nyxd.log"
        self.log = self.log_path.open("wb")
        self.nyxd = subprocess.Popen(
            self.holder.argv(
                str(BIN / "nyxd"),
                "--state-dir",
                str(tmp / "nyx" / "state"),
                "--run-dir",
                str(tmp / "nyx" / "run"),
                "--socket",
                str(self.sock),
                "--container-subnet",
                "10.231.250.0/24",
                "--gateway-ip",
                "10.231.250.1",
                "--bridge",
                "nyxb0",
                "--log-level",
                "info",  # "container started" carries each start's steps in ms
            ),
            stdout=self.log,
            stderr=self.log,
            env={k: v for k, v in os.environ.items() if not k.startswith("NYXD_")},
        )
        self.client = Client(self.sock)
        for _ in range(300):
            try:
                self.client.info()
                break
            except Exception:
                time.sleep(0.1)
        self.client.load(tar)
        self.made: list[dict[str, Any]] = []

    def cli(self) -> list[str]:
        return [str(BIN / "nyx"), "--socket", str(self.sock)]

    def fill(self, n: int) -> None:
        """Start sleeping containers until ``n`` are running (4 client threads)."""
        spec = {"image": "busybox:nyx", "command": SLEEPER}
        with ThreadPoolExecutor(max_workers=4) as pool:
            self.made += pool.map(lambda i: self.client.create(spec), range(n - len(self.made)))

    def empty(self) -> None:
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(
                pool.map(
                    lambda c: self.client.request(
                        "DELETE", f"/v1/containers/{c['id']}", params={"force": 1}
                    ),
                    self.made,
                )
            )
        self.made = []

    def steps(self) -> list[dict[str, float]]:
        """nyxd's own per-step times of every start so far (its "container started" log)."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("msg") == "container started" and isinstance(rec.get("ms"), dict):
                out.append(rec["ms"])
        return out

    def close(self) -> None:
        self.nyxd.send_signal(signal.SIGTERM)
        try:
            self.nyxd.wait(120)
        except subprocess.TimeoutExpired:
            self.nyxd.kill()
        self.log.close()
        self.holder.close()
        self.ns.delete()


class Podman(Engine):
    name = "podman"
    ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]

    def __init__(self, tmp: Path, tar: Path) -> None:
        self.ipam = Path("/run/containers/networks/ipam.db")
        self.had_ipam = self.ipam.exists()
        super().__init__(Netns.create("bench-podman"))
        self.base = tmp / "podman"
        self.count = 0
        self.holder.run(*self.cli(), "load", "-i", str(tar))

    def cli(self) -> list[str]:
        return podman_cli(self.base)

    def run_args(self) -> list[str]:
        return ["run", "-d", *self.ULIMITS, "-p", "8080:80", "busybox:nyx", *HTTPD]

    def fill(self, n: int) -> None:
        while self.count < n:
            self.holder.run(*self.cli(), "run", "-d", *self.ULIMITS, "busybox:nyx", *SLEEPER)
            self.count += 1

    def close(self) -> None:
        self.holder.run(*self.cli(), "rm", "-af", "-t", "0", check=False)
        self.holder.run(*self.cli(), "system", "reset", "-f", check=False)
        self.holder.close()
        self.ns.delete()
        if not self.had_ipam:
            self.ipam.unlink(missing_ok=True)
        subprocess.run(["umount", "-R", str(self.base)], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


def _sums(e: Engine) -> list[float]:
    return [u + d for u, d in zip(e.ups, e.downs, strict=True)]


def med(xs: Sequence[float]) -> float:
    return statistics.median(xs) * 1000


def spread(xs: Sequence[float]) -> str:
    """The middle half of the runs (ms): how noisy the pass was."""
    if len(xs) < 4:
        return ""
    q = statistics.quantiles([x * 1000 for x in xs], n=4)
    return f"{q[0]:.0f}-{q[2]:.0f}"


def precompile() -> None:
    """Byte-compile nyx's sources, as installing a wheel does.

    An editable checkout run with ``PYTHONDONTWRITEBYTECODE`` (set in some shells and CI
    environments) would otherwise recompile the ``nyx`` client's modules on every call.
    """
    import compileall

    for dist in ("nyx_core", "nyx_cli"):
        compileall.compile_dir(str(ROOT / dist / "src"), quiet=1)


def alternate(engines: Sequence[Engine], rounds: int, each: Callable[[Engine], None]) -> None:
    """``each(engine)`` for every engine, ``rounds`` times, the order swapped every round."""
    for i in range(rounds):
        for e in engines if i % 2 == 0 else list(reversed(engines)):
            each(e)


def breakdown(nyx: Nyx, rounds: int) -> dict[str, list[float]]:
    """The parts of a ``nyx run -d -p`` that can be timed from outside, interleaved."""
    py = str(BIN / "python")
    nowhere = str(nyx.tmp / "no-such.sock")
    probes = {
        "interpreter": [py, "-c", "pass"],
        "client": [str(BIN / "nyx"), "--socket", nowhere, *nyx.run_args()],
        "click": [py, "-c", "import nyx_cli.client._cli"],
    }
    out: dict[str, list[float]] = {k: [] for k in probes}
    for _ in range(rounds):
        for key, argv in probes.items():
            out[key].append(nyx.holder.timed(*argv)[0])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--ps-containers", type=int, default=50)
    ap.add_argument("--containers", type=int, default=100)
    ap.add_argument("--no-podman", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_e2e: needs root")
    precompile()
    runs = args.runs
    pod: Podman | None = None
    why = "skipped (--no-podman)" if args.no_podman else ""
    if not why and shutil.which("podman") is None:
        why = "podman not installed (apt-get install podman)"
    with tempfile.TemporaryDirectory(prefix="nyx-bench-e2e-") as d:
        tmp = Path(d)
        tar = tmp / "busybox.tar"
        subprocess.run(
            [sys.executable, str(ROOT / "examples" / "busybox_image.py"), str(tar)],
            check=True,
            capture_output=True,
        )
        nyx = Nyx(tmp, tar)
        try:
            if not why:
                pod = Podman(tmp, tar)
                try:
                    pod.cycle(record=False)
                except RuntimeError as exc:
                    why = f"podman did not work here: {exc}"
                    pod.close()
                    pod = None
            engines: list[Engine] = [nyx] + ([pod] if pod else [])
            nyx.cycle(record=False)
            started = len(nyx.steps())
            alternate(engines, runs, lambda e: e.cycle())
            steps = nyx.steps()[started:]
            parts = breakdown(nyx, 2 * runs)

            rss0 = rss_kib(nyx.nyxd.pid)
            for e in engines:
                e.fill(args.ps_containers)
                e.time_ps(args.ps_containers)  # warm-up
                e.ps.clear()
            alternate(engines, 2 * runs, lambda e: e.time_ps(args.ps_containers))

            nyx.empty()
            t0 = time.perf_counter()
            nyx.fill(args.containers)
            t_start = time.perf_counter() - t0
            time.sleep(1)
            rss_n = rss_kib(nyx.nyxd.pid)
            t0 = time.perf_counter()
            nyx.empty()
            t_rm = time.perf_counter() - t0
        finally:
            if pod is not None:
                pod.close()
            nyx.close()
    report(nyx, pod, why, steps, parts, runs, args)
    n = args.containers
    print(
        f"\nnyxd resident memory: {rss0 / 1024:.1f} MiB idle, {rss_n / 1024:.1f} MiB with "
        f"{n} containers ({(rss_n - rss0) / n:.0f} KiB per container)"
    )
    print(f"{n} containers started in {t_start:.1f} s, removed in {t_rm:.1f} s (4 client threads)")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def report(
    nyx: Nyx,
    pod: Podman | None,
    why: str,
    steps: list[dict[str, float]],
    parts: dict[str, list[float]],
    runs: int,
    args: argparse.Namespace,
) -> None:
    print(
        f"\nbench_e2e: medians of {runs} runs (ms; middle half in brackets), both engines "
        "alternating; run -d -p 8080:80 until the port answers; stop -t 0 + rm; "
        f"ps with {args.ps_containers} containers ({2 * runs} runs)"
    )
    print(f"{'operation':<30} {'nyx':>18} {'podman':>18} {'nyx/podman':>11}")
    rows = [
        ("run -d -p until it answers", nyx.ups, pod.ups if pod else None),
        ("  the run -d command alone", nyx.cmds, pod.cmds if pod else None),
        ("stop + rm", nyx.downs, pod.downs if pod else None),
        ("whole cycle", _sums(nyx), _sums(pod) if pod else None),
        (f"ps ({args.ps_containers} containers)", nyx.ps, pod.ps if pod else None),
    ]
    for label, ours, theirs in rows:
        a = f"{med(ours):.1f} [{spread(ours)}]"
        if theirs:
            b = f"{med(theirs):.1f} [{spread(theirs)}]"
            print(f"{label:<30} {a:>18} {b:>18} {med(ours) / med(theirs):>11.2f}")
        else:
            print(f"{label:<30} {a:>18} {'-':>18} {'-':>11}")
    if pod is None:
        print(f"podman: {why}")

    up, cmd = med(nyx.ups), med(nyx.cmds)
    interp, client, click = (med(parts[k]) for k in ("interpreter", "client", "click"))
    step_ms = {
        label: statistics.median(sum(s.get(k, 0.0) for k in keys) for s in steps) if steps else 0.0
        for label, keys in STEPS.items()
    }
    nyxd_steps = sum(step_ms.values())
    request = cmd - client
    print(f"\nwhere a nyx run -d -p goes (medians, ms; {len(steps)} starts logged by nyxd)")
    print(f"  {'interpreter start (python -c pass, via nsenter)':<52} {interp:>7.1f}")
    print(f"  {'nyx: imports, parsing (against no daemon)':<52} {client - interp:>7.1f}")
    print(f"  {'request to nyxd and back':<52} {request:>7.1f}")
    for k in STEPS:
        print(f"  {'  nyxd: ' + k:<52} {step_ms[k]:>7.1f}")
    print(f"  {'  nyxd: the rest (HTTP, validation, state, log)':<52} {request - nyxd_steps:>7.1f}")
    print(f"  {'the nyx run -d command':<52} {cmd:>7.1f}")
    print(f"  {'then until the port answers (httpd, 3 ms polls)':<52} {up - cmd:>7.1f}")
    print(f"  {'(the click CLI, for --help and rare commands: import)':<52} {click - interp:>7.1f}")


if __name__ == "__main__":
    main()
