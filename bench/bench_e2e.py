"""End to end: ``nyx run -d -p 8080:80`` until the port answers, then stop + rm, side by side
with ``podman run -d -p`` (runc, netavark), and nyxd's resident memory with 100 containers.

Everything runs inside throwaway namespaces: one "host" netns per engine, each with a
long-lived private mount namespace (``nsenter --net ... unshare --mount --propagation slave``)
that the engine's commands join. Needs root, runc, busybox-static; podman is optional.

    .venv/bin/python bench/bench_e2e.py [--runs 10] [--containers 100] [--no-podman]
"""

from __future__ import annotations

import argparse
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

from nyx_cli.client._http import Client
from nyx_core.testing import Netns, entered

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HTTPD = ["httpd", "-f", "-p", "80", "-h", "/www"]


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


def measure(
    runs: int, start: Callable[[], str], stop_rm: Callable[[str], None], ns: Netns, port: int
) -> tuple[list[float], list[float]]:
    ups, downs = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        cid = start()
        until_answers(ns, port)
        t1 = time.perf_counter()
        stop_rm(cid)
        t2 = time.perf_counter()
        if http_ok(ns, port):
            raise RuntimeError("port still answers after stop + rm")
        ups.append(t1 - t0)
        downs.append(t2 - t1)
    return ups, downs


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def bench_nyx(tmp: Path, tar: Path, runs: int, containers: int) -> dict[str, object]:
    ns = Netns.create("bench-e2e")
    holder = Holder(ns)
    sock = tmp / "nyx" / "run" / "nyxd.sock"
    log = (tmp / "nyxd.log").open("wb")
    nyxd = subprocess.Popen(
        holder.argv(
            str(BIN / "nyxd"),
            "--state-dir",
            str(tmp / "nyx" / "state"),
            "--run-dir",
            str(tmp / "nyx" / "run"),
            "--socket",
            str(sock),
            "--container-subnet",
            "10.231.250.0/24",
            "--gateway-ip",
            "10.231.250.1",
            "--bridge",
            "nyxb0",
            "--log-level",
            "warning",
        ),
        stdout=log,
        stderr=log,
        env={k: v for k, v in os.environ.items() if not k.startswith("NYXD_")},
    )
    client = Client(sock)
    nyx = [str(BIN / "nyx"), "--socket", str(sock)]
    try:
        for _ in range(300):
            try:
                client.info()
                break
            except Exception:
                time.sleep(0.1)
        client.load(tar)
        pid = nyxd.pid  # nsenter execs nyxd (no pid namespace, no fork)

        def start() -> str:
            out = subprocess.run(
                [*nyx, "run", "-d", "-p", "8080:80", "busybox:nyx", *HTTPD],
                capture_output=True,
                text=True,
                check=True,
            )
            return out.stdout.strip()

        def stop_rm(cid: str) -> None:
            subprocess.run([*nyx, "stop", "-t", "0", cid], capture_output=True, check=True)
            subprocess.run([*nyx, "rm", cid], capture_output=True, check=True)

        start_rm = measure(1, start, stop_rm, ns, 8080)  # warm-up
        del start_rm
        ups, downs = measure(runs, start, stop_rm, ns, 8080)

        rss0 = rss_kib(pid)
        t0 = time.perf_counter()
        spec = {"image": "busybox:nyx", "command": ["sleep", "3600"]}
        with ThreadPoolExecutor(max_workers=4) as pool:
            made = list(pool.map(lambda i: client.create(spec), range(containers)))
        t_start = time.perf_counter() - t0
        time.sleep(1)
        rss_n = rss_kib(pid)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(
                pool.map(
                    lambda c: client.request(
                        "DELETE", f"/v1/containers/{c['id']}", params={"force": 1}
                    ),
                    made,
                )
            )
        t_rm = time.perf_counter() - t0
        return {
            "up": ups,
            "down": downs,
            "rss0": rss0,
            "rssn": rss_n,
            "n": containers,
            "t_start_n": t_start,
            "t_rm_n": t_rm,
        }
    finally:
        nyxd.send_signal(signal.SIGTERM)
        try:
            nyxd.wait(120)
        except subprocess.TimeoutExpired:
            nyxd.kill()
        log.close()
        holder.close()
        ns.delete()


def bench_podman(tmp: Path, tar: Path, runs: int) -> dict[str, object] | str:
    if shutil.which("podman") is None:
        return "podman not installed (apt-get install podman)"
    ipam = Path("/run/containers/networks/ipam.db")
    had_ipam = ipam.exists()
    ns = Netns.create("bench-podman")
    holder = Holder(ns)
    base = tmp / "podman"
    pod = [
        "podman",
        "--root",
        str(base / "root"),
        "--runroot",
        str(base / "runroot"),
        "--tmpdir",
        str(base / "tmp"),
        "--cgroup-manager",
        "cgroupfs",
        "--runtime",
        "runc",
        "--network-config-dir",
        str(base / "net"),
        "--storage-driver",
        "overlay",
        "--events-backend",
        "none",
    ]
    try:
        holder.run(*pod, "load", "-i", str(tar))

        def start() -> str:
            return holder.run(
                *pod,
                "run",
                "-d",
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=4096:4096",
                "-p",
                "8080:80",
                "busybox:nyx",
                *HTTPD,
            ).strip()

        def stop_rm(cid: str) -> None:
            holder.run(*pod, "stop", "-t", "0", cid)
            holder.run(*pod, "rm", cid)

        try:
            measure(1, start, stop_rm, ns, 8080)
        except RuntimeError as exc:
            return f"podman did not work here: {exc}"
        ups, downs = measure(runs, start, stop_rm, ns, 8080)
        return {"up": ups, "down": downs}
    finally:
        holder.run(*pod, "rm", "-af", "-t", "0", check=False)
        holder.run(*pod, "system", "reset", "-f", check=False)
        holder.close()
        ns.delete()
        if not had_ipam:
            ipam.unlink(missing_ok=True)
        subprocess.run(["umount", "-R", str(base)], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def med(xs: Sequence[float]) -> float:
    return statistics.median(xs) * 1000


def precompile() -> None:
    """Byte-compile nyx's sources, as installing a wheel does.

    An editable checkout run with ``PYTHONDONTWRITEBYTECODE`` (set in some shells and CI
    environments) would otherwise recompile the ``nyx`` client's modules on every call.
    """
    import compileall

    for dist in ("nyx_core", "nyx_cli"):
        compileall.compile_dir(str(ROOT / dist / "src"), quiet=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--containers", type=int, default=100)
    ap.add_argument("--no-podman", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_e2e: needs root")
    precompile()
    with tempfile.TemporaryDirectory(prefix="nyx-bench-e2e-") as d:
        tmp = Path(d)
        tar = tmp / "busybox.tar"
        subprocess.run(
            [sys.executable, str(ROOT / "examples" / "busybox_image.py"), str(tar)],
            check=True,
            capture_output=True,
        )
        nyx = bench_nyx(tmp, tar, args.runs, args.containers)
        pod = "skipped (--no-podman)" if args.no_podman else bench_podman(tmp, tar, args.runs)
    up_n, down_n = med(nyx["up"]), med(nyx["down"])  # type: ignore[arg-type]
    print(
        f"\nbench_e2e: medians of {args.runs} runs (ms), run -d -p 8080:80 until the port "
        "answers; stop -t 0 + rm"
    )
    print(f"{'operation':<34} {'nyx':>9} {'podman':>9} {'nyx/podman':>11}")
    if isinstance(pod, dict):
        up_p, down_p = med(pod["up"]), med(pod["down"])  # type: ignore[arg-type]
        print(f"{'run -d -p until it answers':<34} {up_n:>9.1f} {up_p:>9.1f} {up_n / up_p:>11.2f}")
        print(f"{'stop + rm':<34} {down_n:>9.1f} {down_p:>9.1f} {down_n / down_p:>11.2f}")
        tot_n, tot_p = up_n + down_n, up_p + down_p
        print(f"{'whole cycle':<34} {tot_n:>9.1f} {tot_p:>9.1f} {tot_n / tot_p:>11.2f}")
    else:
        print(f"{'run -d -p until it answers':<34} {up_n:>9.1f} {'-':>9} {'-':>11}")
        print(f"{'stop + rm':<34} {down_n:>9.1f} {'-':>9} {'-':>11}")
        print(f"podman: {pod}")
    n = nyx["n"]
    rss0, rssn = nyx["rss0"], nyx["rssn"]
    print(
        f"\nnyxd resident memory: {rss0 / 1024:.1f} MiB idle, {rssn / 1024:.1f} MiB with {n} "
        f"containers ({(rssn - rss0) / n:.0f} KiB per container)"
    )  # type: ignore[operator]
    print(
        f"{n} containers started in {nyx['t_start_n']:.1f} s, removed in "
        f"{nyx['t_rm_n']:.1f} s (4 client threads)"
    )


if __name__ == "__main__":
    main()
