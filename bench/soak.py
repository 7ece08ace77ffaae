"""Soak: nyxd over a long run of container and compose cycles under constant DNS load.

``--cycles`` (2,000) create/start/stop/rm cycles of a container with a published port,
``--compose`` (100) ``nyx compose up -d`` / ``down`` of a two-service stack (a normal and
an internal network, a published port) spread over them, while a client in the host
namespace sends ``--dns-qps`` (200) queries per second to the embedded DNS. nyxd's RSS,
open file descriptors, threads, and the leases, nft elements and mounts it holds are
sampled at the start (after a short warm-up) and every ``--every`` (200) cycles; at the end
nothing may have grown (docs/performance.md: RSS growth < 5 MiB, fds and threads back to
their start value, zero leaked leases, elements, mounts or container monitors).

Everything runs inside a throwaway "host" network namespace with a private mount namespace
(as bench_e2e.py does). Needs root, runc, busybox-static.

    .venv/bin/python bench/soak.py [--cycles 2000] [--compose 100] [--every 200]
                                   [--dns-qps 200]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from nyx_cli.client._http import Client
from nyx_core.testing import Netns, entered

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SUBNET, GATEWAY = "10.231.249.0/24", "10.231.249.1"
RSS_GROWTH_KIB = 5 * 1024
STACK = """
name: soak
services:
  db:
    image: busybox:nyx
    command: [sleep, "3600"]
    networks: [back]
  web:
    image: busybox:nyx
    depends_on: [db]
    command: [sleep, "3600"]
    ports: ["8081:80"]
    networks: [front, back]
networks:
  front: {}
  back:
    internal: true
"""


@dataclass
class Sample:
    cycles: int
    compose: int
    rss_kib: int
    fds: int
    threads: int
    leases: int
    elements: int
    mounts: int
    monitors: int
    dns_answers: int
    dns_errors: int

    def row(self) -> str:
        return (
            f"{self.cycles:>6} {self.compose:>7} {self.rss_kib / 1024:>8.1f} {self.fds:>4} "
            f"{self.threads:>7} {self.leases:>6} {self.elements:>8} {self.mounts:>6} "
            f"{self.monitors:>8} {self.dns_answers:>9} {self.dns_errors:>6}"
        )


HEADER = "cycles compose  rss MiB  fds threads leases elements mounts monitors dns-answers errors"


class Soak:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ns = Netns.create("soak")
        self.holder = subprocess.Popen(
            ["nsenter", f"--net={self.ns.path}", "--", "unshare", "--mount", "--propagation",
             "slave", "sleep", "infinity"]
        )  # fmt: skip
        time.sleep(0.2)
        self.root = tmp / "nyx"
        self.sock = self.root / "run" / "nyxd.sock"
        self.log = (tmp / "nyxd.log").open("wb")
        self.nyxd = subprocess.Popen(
            self.argv(
                str(BIN / "nyxd"), "--state-dir", str(self.root / "state"),
                "--run-dir", str(self.root / "run"), "--socket", str(self.sock),
                "--container-subnet", SUBNET, "--gateway-ip", GATEWAY, "--bridge", "nyxsoak0",
                "--log-level", "warning",
            ),
            stdout=self.log, stderr=self.log,
            env={k: v for k, v in os.environ.items() if not k.startswith("NYXD_")},
        )  # fmt: skip
        self.client = Client(self.sock)
        for _ in range(300):
            try:
                self.client.info()
                break
            except Exception:
                time.sleep(0.1)
        else:
            raise RuntimeError("nyxd did not start: " + (tmp / "nyxd.log").read_text())
        self.work = tmp / "stack"
        self.work.mkdir()
        (self.work / "compose.yaml").write_text(STACK)
        self.answers = 0
        self.errors = 0
        self.stop_dns = threading.Event()

    def argv(self, *cmd: str) -> list[str]:
        return ["nsenter", "-t", str(self.holder.pid), "--mount", "--net", "--", *cmd]

    def nyx(self, *args: str) -> None:
        p = subprocess.run(
            self.argv(str(BIN / "nyx"), "--socket", str(self.sock), *args),
            capture_output=True, text=True, timeout=300, cwd=self.work,
        )  # fmt: skip
        if p.returncode != 0:
            raise RuntimeError(f"nyx {' '.join(args)}: {p.stdout}{p.stderr}")

    # -------------------------------------------------------------- load

    def cycle(self, n: int) -> None:
        spec = {
            "image": "busybox:nyx",
            "name": f"soak-{n}",
            "command": ["sleep", "3600"],
            "ports": ["8080:80", "127.0.0.1:8082:82/udp"],
        }
        c = self.client.create(spec)
        self.client.stop(c["id"], timeout=0)
        self.client.request("DELETE", f"/v1/containers/{c['id']}")

    def compose(self) -> None:
        stack = str(self.work / "compose.yaml")  # nsenter --mount starts in /
        self.nyx("compose", "-f", stack, "up", "-d")
        self.nyx("compose", "-f", stack, "down", "-t", "0")

    def dns_load(self, qps: float) -> None:
        """``qps`` A queries per second for the long-lived container's name (UDP)."""
        with entered(self.ns):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(1)
        name = b"".join(bytes([len(p)]) + p for p in b"dnsload.nyxd.local".split(b".")) + b"\0"
        gap = 1 / qps
        qid = 0
        nxt = time.monotonic()
        with s:
            while not self.stop_dns.is_set():
                qid = (qid + 1) & 0xFFFF
                s.sendto(struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + name + b"\0\1\0\1",
                         (GATEWAY, 53))  # fmt: skip
                try:
                    reply = s.recv(512)
                    ok = reply[:2] == struct.pack(">H", qid) and reply[3] & 0x0F == 0
                    ok = ok and struct.unpack(">H", reply[6:8])[0] > 0
                except OSError:
                    ok = False
                if ok:
                    self.answers += 1
                else:
                    self.errors += 1
                nxt += gap
                time.sleep(max(0.0, nxt - time.monotonic()))

    # -------------------------------------------------------------- what nyxd holds

    def sample(self, cycles: int, compose: int) -> Sample:
        pid = self.nyxd.pid
        status = Path(f"/proc/{pid}/status").read_text()

        def field(name: str) -> int:
            line = next(x for x in status.splitlines() if x.startswith(name + ":"))
            return int(line.split()[1])

        out = subprocess.run(
            ["nsenter", f"--net={self.ns.path}", "--", "nft", "-j", "list", "table", "ip", "nyx"],
            capture_output=True, text=True,
        ).stdout  # fmt: skip
        elements = 0
        for item in json.loads(out or '{"nftables": []}')["nftables"]:
            obj = item.get("map") or item.get("set")
            if obj:
                elements += len(obj.get("elem", []))
        mounts = sum(
            str(self.root) in line
            for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
        )
        leases = len(list((self.root / "state" / "native" / "attachments").glob("*.json")))
        return Sample(
            cycles, compose, field("VmRSS"), len(os.listdir(f"/proc/{pid}/fd")),
            field("Threads"), leases, elements, mounts, self.monitors(), self.answers, self.errors,
        )  # fmt: skip

    def monitors(self) -> int:
        """Container monitors alive (each works in its ``run/monitors/<id>``)."""
        status_root = str(self.root / "run" / "monitors")
        count = 0
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    ours = b"_monitor.py" in (proc / "cmdline").read_bytes()
                    count += ours and os.readlink(proc / "cwd").startswith(status_root)
                except OSError:
                    continue
        return count

    def close(self) -> None:
        self.stop_dns.set()
        self.nyxd.send_signal(signal.SIGTERM)
        try:
            self.nyxd.wait(300)
        except subprocess.TimeoutExpired:
            self.nyxd.kill()
            self.nyxd.wait()
        self.log.close()
        self.holder.kill()
        self.holder.wait()
        self.ns.delete()


def verdict(first: Sample, last: Sample) -> list[tuple[str, bool, str]]:
    growth = last.rss_kib - first.rss_kib
    return [
        ("RSS growth < 5 MiB", growth < RSS_GROWTH_KIB, f"{growth / 1024:+.1f} MiB"),
        ("fds back to start", last.fds <= first.fds, f"{first.fds} -> {last.fds}"),
        ("threads back to start", last.threads <= first.threads,
         f"{first.threads} -> {last.threads}"),
        ("no leaked lease", last.leases <= first.leases, f"{first.leases} -> {last.leases}"),
        ("no leaked nft element", last.elements <= first.elements,
         f"{first.elements} -> {last.elements}"),
        ("no leaked mount", last.mounts <= first.mounts, f"{first.mounts} -> {last.mounts}"),
        ("no leaked monitor", last.monitors <= first.monitors,
         f"{first.monitors} -> {last.monitors}"),
        ("DNS answered throughout", last.dns_errors == 0,
         f"{last.dns_answers} answers, {last.dns_errors} errors"),
    ]  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=2000)
    ap.add_argument("--compose", type=int, default=100)
    ap.add_argument("--every", type=int, default=200)
    ap.add_argument("--dns-qps", type=float, default=200)
    ap.add_argument("--warmup", type=int, default=20, help="cycles before the first sample")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("soak: needs root")
    compose_every = max(1, args.cycles // max(1, args.compose)) if args.compose else 0
    samples: list[Sample] = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="nyx-soak-") as d:
        tmp = Path(d)
        tar = tmp / "busybox.tar"
        subprocess.run(
            [sys.executable, str(ROOT / "examples" / "busybox_image.py"), str(tar)],
            check=True, capture_output=True,
        )  # fmt: skip
        soak = Soak(tmp)
        try:
            soak.client.load(tar)
            soak.client.create(
                {"image": "busybox:nyx", "name": "dnsload", "command": ["sleep", "1000000"]}
            )
            dns = threading.Thread(target=soak.dns_load, args=(args.dns_qps,), daemon=True)
            dns.start()
            for n in range(args.warmup):
                soak.cycle(-1 - n)
            if args.compose:
                soak.compose()
            print(HEADER, flush=True)
            samples.append(soak.sample(0, 0))
            print(samples[-1].row(), flush=True)
            composed = 0
            for n in range(1, args.cycles + 1):
                soak.cycle(n)
                if compose_every and n % compose_every == 0 and composed < args.compose:
                    soak.compose()
                    composed += 1
                if n % args.every == 0 or n == args.cycles:
                    samples.append(soak.sample(n, composed))
                    print(samples[-1].row(), flush=True)
        finally:
            soak.close()
    minutes = (time.monotonic() - t0) / 60
    print(f"\n{args.cycles} cycles, {composed} compose up/down, {args.dns_qps:.0f} DNS qps, "
          f"{minutes:.1f} min")  # fmt: skip
    ok = True
    for what, met, detail in verdict(samples[0], samples[-1]):
        ok = ok and met
        print(f"{what:<26} {'met' if met else 'NOT MET':<8} {detail}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
