#!/usr/bin/env python3
"""How much a container start pays for the mounts of the namespace runc is started from.

``runc run`` gives the container a mount namespace copied from its own (every mount in it),
makes it a slave and pivots into the rootfs, detaching the copies: work that grows with the
mounts where runc runs. nyxd keeps two mounts per container in its namespace (the
container's network namespace, bound at ``run/netns/<id>``, and its overlay rootfs), so
with 1,000 containers each start runs runc next to ~2,000 mounts. This starts a sleeping
busybox with ``runc run -d`` (and removes it) from a private mount namespace holding
``--mounts`` extra tmpfs mounts, for each count, and prints the median and p90 in ms.

Usage (root; runc and busybox-static)::

    .venv/bin/python bench/bench_runc_mounts.py [--mounts 0,1000,2000] [--iterations 9]

Each count runs in a mount namespace of its own (``unshare -m``): its mounts go with it.
runc's state, the bundle and the cgroups (``/nyx-bench-mounts-<pid>``) are removed at the
end, also after an error.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CGROUP_PARENT = f"nyx-bench-mounts-{os.getpid()}"


def bundle(tmp: Path) -> Path:
    """A bundle whose process sleeps: busybox as ``/bin/sleep``, runc's default spec."""
    b = tmp / "bundle"
    for d in ("bin", "proc", "dev", "sys"):
        (b / "rootfs" / d).mkdir(parents=True)
    busybox = shutil.which("busybox") or "/bin/busybox"
    shutil.copy(busybox, b / "rootfs" / "bin" / "busybox")
    (b / "rootfs" / "bin" / "sleep").symlink_to("busybox")
    subprocess.run(["runc", "spec"], cwd=b, check=True)
    spec = json.loads((b / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["/bin/sleep", "1000"]
    spec["linux"]["cgroupsPath"] = f"/{CGROUP_PARENT}/c"
    (b / "config.json").write_text(json.dumps(spec))
    return b


def child(mounts: int, iterations: int, tmp: Path, b: Path) -> None:
    """In its own mount namespace: ``mounts`` tmpfs mounts, then the timed starts."""
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    for i in range(mounts):
        d = tmp / "m" / str(i)
        d.mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "t", str(d)], check=True)
    root = tmp / "state"
    took = []
    with open(os.devnull, "r+b") as null:
        for k in range(iterations):
            cid = f"bench-mounts-{os.getpid()}-{k}"
            t0 = time.perf_counter()
            # runc's stdout goes nowhere: a pipe would be held open by the container
            subprocess.run(
                ["runc", "--root", str(root), "run", "-d", "-b", str(b), cid],
                stdin=null,
                stdout=null,
                stderr=null,
                check=True,
            )
            took.append((time.perf_counter() - t0) * 1000)
            subprocess.run(["runc", "--root", str(root), "delete", "-f", cid], check=True)
    count = len(Path("/proc/self/mountinfo").read_text().splitlines())
    print(json.dumps({"mounts": count, "ms": took}))


def cleanup(tmp: Path) -> None:
    root = tmp / "state"
    if root.exists():
        out = subprocess.run(
            ["runc", "--root", str(root), "list", "-q"], capture_output=True, text=True
        ).stdout
        for cid in out.split():
            subprocess.run(["runc", "--root", str(root), "delete", "-f", cid], capture_output=True)
    cg = Path("/sys/fs/cgroup")
    # v1: a parent in each hierarchy; v2: one under the root (runc removes the leaf ``c``)
    for parent in [cg / CGROUP_PARENT, *(d / CGROUP_PARENT for d in cg.iterdir() if d.is_dir())]:
        for d in (parent / "c", parent):
            try:
                d.rmdir()
            except OSError:
                pass
    shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mounts", default="0,1000,2000", help="extra mounts, comma separated")
    ap.add_argument("--iterations", type=int, default=9)
    ap.add_argument("--child", nargs=3, metavar=("MOUNTS", "TMP", "BUNDLE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(int(args.child[0]), args.iterations, Path(args.child[1]), Path(args.child[2]))
        return 0
    if os.geteuid() != 0:
        sys.exit("bench_runc_mounts: needs root")
    if shutil.which("runc") is None:
        sys.exit("bench_runc_mounts: needs runc")
    tmp = Path(tempfile.mkdtemp(prefix="nyx-bench-mounts-"))
    try:
        b = bundle(tmp)
        print(f"runc run -d of a sleeping busybox, {args.iterations} iterations; ms")
        print(f"{'extra mounts':>12} {'mounts seen':>12} {'median':>8} {'p90':>8} {'vs first':>9}")
        first = None
        for n in (int(x) for x in args.mounts.split(",")):
            work = tmp / f"n{n}"
            work.mkdir()
            argv = [sys.executable, os.path.abspath(__file__), "--iterations"]
            argv += [str(args.iterations), "--child", str(n), str(work), str(b)]
            out = subprocess.run(
                ["unshare", "-m", "--propagation", "private", *argv],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            res = json.loads(out.strip().splitlines()[-1])
            ms = res["ms"]
            med = statistics.median(ms)
            first = first or med
            p90 = sorted(ms)[int(len(ms) * 0.9)]
            print(f"{n:12d} {res['mounts']:12d} {med:8.1f} {p90:8.1f} {med / first:9.2f}")
    finally:
        cleanup(tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
