"""E2E kit: a real nyxd (native driver, embedded DNS, runc) in a throwaway host namespace.

Imported by ``conftest.py`` (fixtures) and the tests (``Nyxd``).

The host namespace is the test kit's real-looking host (:class:`nyx_core.testing.HostTopology`):
``uplink0`` 203.0.113.2 with the default route to an "internet" namespace (server address
198.18.0.10), ``lan0`` 198.51.100.1 to a LAN neighbour (198.51.100.2, the ``external_ns``
fixture). nyxd runs as ``nsenter --net=/run/netns/<host-ns> -- unshare --mount
--propagation slave nyxd ...`` (``ip netns exec`` would remount /sys and hide the cgroup
mounts from runc), with its state, run dir and socket under the test's tmp dir and a
10.231.x test subnet. Nothing touches the root namespace; every fixture cleans up in
``finally``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nyx_cli.client._http import ApiError, Client, DaemonUnavailable
from nyx_core.testing import HOST_LINKS, LAN_HOST_IP, HostTopology, Neighbour, Netns

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("runc", "nsenter", "unshare", "ip", "nft", "busybox"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    why = _missing()
    if why:
        pytest.skip(why)
    out = tmp_path_factory.mktemp("img") / "busybox.tar"
    subprocess.run(
        [sys.executable, str(ROOT / "examples" / "busybox_image.py"), str(out)],
        check=True,
        capture_output=True,
    )
    return out


class Nyxd:
    """One nyxd process in ``ns`` with everything under ``root``.

    ``shared_mounts=True`` runs every nyxd started by this object in one mount namespace
    held by a ``sleep`` process, like nyxd restarts on a real host (its netns and rootfs
    mounts survive a crash); by default each start gets a fresh private mount namespace.
    """

    def __init__(
        self,
        ns: Netns,
        root: Path,
        subnet_octet: int,
        *,
        shared_mounts: bool = False,
        topology: HostTopology | None = None,
    ) -> None:
        self.ns = ns
        self.topology = topology
        self.shared_mounts = shared_mounts
        self.holder: subprocess.Popen[bytes] | None = None
        self.root = root
        self.state = root / "state"
        self.run = root / "run"
        self.socket = root / "run" / "nyxd.sock"
        self.log = root / "nyxd.log"
        self.octet = subnet_octet
        self.gateway = f"10.231.{subnet_octet}.1"
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = Client(self.socket)

    def _enter(self) -> list[str]:
        private = ["nsenter", f"--net={self.ns.path}", "--"]
        private += ["unshare", "--mount", "--propagation", "slave"]
        if not self.shared_mounts:
            return private
        if self.holder is None:
            self.holder = subprocess.Popen([*private, "sleep", "infinity"])
            deadline = time.monotonic() + 10
            mine = os.readlink("/proc/self/ns/mnt")
            while os.readlink(f"/proc/{self.holder.pid}/ns/mnt") == mine:
                if time.monotonic() > deadline:
                    raise AssertionError("mount namespace holder did not start")
                time.sleep(0.01)
        return ["nsenter", "-t", str(self.holder.pid), "--mount", "--net", "--"]

    def close(self) -> None:
        """Stop the mount namespace holder (after :meth:`stop` and :meth:`force_cleanup`)."""
        if self.holder is not None:
            self.holder.kill()
            self.holder.wait(10)
            self.holder = None

    def start(
        self,
        *extra: str,
        wait: float = 30,
        faults: str = "",
        nofile: tuple[int, int] | None = None,
    ) -> None:
        """Start nyxd; ``faults``: test-only fault points to arm (``NYXD_TEST_FAULTS``);
        ``nofile``: the ``RLIMIT_NOFILE`` (soft, hard) it starts with."""
        argv = [
            *(["prlimit", f"--nofile={nofile[0]}:{nofile[1]}", "--"] if nofile else []),
            *self._enter(),
            str(BIN / "nyxd"),
            "--state-dir",
            str(self.state),
            "--run-dir",
            str(self.run),
            "--socket",
            str(self.socket),
            "--container-subnet",
            f"10.231.{self.octet}.0/24",
            "--gateway-ip",
            self.gateway,
            "--bridge",
            "nyxt0",
            "--log-level",
            "debug",
            *extra,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("NYXD_")}
        if faults:
            env.update(NYXD_TEST_FAULTS=faults, NYXD_TEST_MODE="1")
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"nyxd exited {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                self.client.info()
                return
            except (DaemonUnavailable, ApiError):
                time.sleep(0.1)
        raise AssertionError(f"nyxd did not answer in {wait}s:\n{self.log.read_text()}")

    def stop(self, timeout: float = 60) -> int | None:
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        return proc.returncode

    def died(self, timeout: float = 20) -> int:
        """Wait for nyxd to die on its own (an armed fault point); its exit status."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"nyxd still alive after {timeout}s") from None
        self.proc = None
        return code

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.proc = None

    def nyx(self, *args: str, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "nyx"), "--socket", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            **kw,
        )

    def host(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a command in the host namespace (network only)."""
        return subprocess.run(
            ["nsenter", f"--net={self.ns.path}", "--", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def runc_list(self) -> list[dict[str, Any]]:
        root = self.run / "runc"
        if not root.exists():
            return []
        out = subprocess.run(
            ["runc", "--root", str(root), "list", "--format", "json"],
            capture_output=True,
            text=True,
        ).stdout
        return json.loads(out or "null") or []

    def force_cleanup(self) -> None:
        """Last resort after a failed test: kill what runc still knows."""
        for item in self.runc_list():
            subprocess.run(
                ["runc", "--root", str(self.run / "runc"), "delete", "--force", item["id"]],
                capture_output=True,
            )

    def veths(self) -> list[str]:
        """nyx's veths in the host namespace (the topology's own links left out)."""
        return [
            link["ifname"]
            for link in self.ns.ipj("-d", "link", "show")
            if (link.get("linkinfo") or {}).get("info_kind") == "veth"
            and link["ifname"] not in HOST_LINKS
        ]

    @property
    def subnet_prefix(self) -> str:
        return f"10.231.{self.octet}."

    def mountinfo(self) -> str:
        """``/proc/<pid>/mountinfo`` of nyxd's own mount namespace (never the test's: nyxd
        mounts in a namespace of its own, invisible from here)."""
        pid = None
        if self.proc is not None and self.proc.poll() is None:
            pid = self.proc.pid
        elif self.holder is not None and self.holder.poll() is None:
            pid = self.holder.pid
        if pid is None:
            raise AssertionError("no nyxd (or mount namespace holder) running to look into")
        if os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt"):
            raise AssertionError(f"pid {pid} is not in a mount namespace of its own")
        return Path(f"/proc/{pid}/mountinfo").read_text()

    def monitors(self) -> dict[int, str]:
        """The per-container monitors of this nyxd alive now: pid -> container id (a monitor
        works in its container's ``run/monitors/<id>``; their fork server, in ``/``, is none)."""
        found: dict[int, str] = {}
        status_root = str(self.run / "monitors") + "/"
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if b"_monitor.py" not in (proc / "cmdline").read_bytes():
                    continue
                cwd = os.readlink(proc / "cwd")
            except OSError:
                continue
            if cwd.startswith(status_root):
                found[int(proc.name)] = cwd[len(status_root) :].split("/")[0]
        return found

    def ruleset(self) -> dict[str, Any]:
        """The host namespace's nftables ruleset (JSON)."""
        out = self.host("nft", "-j", "list", "ruleset").stdout
        return json.loads(out) if out.strip() else {"nftables": []}

    def nyx_elements(self, family: str = "ip") -> dict[str, list[Any]]:
        """Elements of table ``ip nyx``'s (or ``ip6 nyx``'s) per-container maps and sets
        ({} without the table)."""
        out: dict[str, list[Any]] = {}
        for item in self.ruleset()["nftables"]:
            obj = item.get("map") or item.get("set")
            if obj and obj.get("table") == "nyx" and obj.get("family") == family:
                out[obj["name"]] = list(obj.get("elem", []))
        return out


_octets = iter(range(10, 250))


@pytest.fixture
def nyxd_factory(tmp_path: Path, busybox_tar: Path) -> Iterator[Callable[..., Nyxd]]:
    """``nyxd_factory(*flags)``: a started nyxd with busybox:nyx loaded."""
    made: list[Nyxd] = []

    def make(
        *flags: str,
        load: bool = True,
        shared_mounts: bool = False,
        nofile: tuple[int, int] | None = None,
    ) -> Nyxd:
        topo = HostTopology.create()
        d = Nyxd(
            topo.host,
            tmp_path / f"nyxd{len(made)}",
            next(_octets),
            shared_mounts=shared_mounts,
            topology=topo,
        )
        made.append(d)
        d.root.mkdir(parents=True)
        d.start(*flags, nofile=nofile)
        if load:
            d.client.load(busybox_tar)
        return d

    try:
        yield make
    finally:
        for d in made:
            try:
                d.stop()
            finally:
                d.force_cleanup()
                d.close()
                if d.topology is not None:
                    d.topology.delete()


@pytest.fixture
def nyxd(nyxd_factory: Callable[..., Nyxd]) -> Nyxd:
    return nyxd_factory()


@pytest.fixture
def external_ns(nyxd: Nyxd) -> tuple[Neighbour, str]:
    """nyxd's LAN neighbour and the host's address on that LAN: ``(ns, "198.51.100.1")``.

    The neighbour (198.51.100.2) can route more through the host on request
    (:meth:`~nyx_core.testing.Neighbour.route_to_host`,
    :meth:`~nyx_core.testing.Neighbour.route_localhost_to_host`).
    """
    assert nyxd.topology is not None
    return nyxd.topology.lan, LAN_HOST_IP


@pytest.fixture
def internet_ns(nyxd: Nyxd) -> Netns:
    """The far end of nyxd's uplink (203.0.113.1, and the server address 198.18.0.10)."""
    assert nyxd.topology is not None
    return nyxd.topology.internet


# ------------------------------------------------------------------ what survivors account for

_PORT_RE = re.compile(
    r"^(?:\[?(?P<ip>[0-9a-fA-F.:]+?)\]?:)?(?P<hp>\d+)(?:-(?P<hp2>\d+))?"
    r":(?P<cp>\d+)(?:-(?P<cp2>\d+))?/(?P<proto>[a-z]+)$"
)
_HEX64 = re.compile(r"\b[0-9a-f]{64}\b")
_DNS_PROBE = """
import json, socket, sys
from dnslib import DNSRecord, QTYPE, RCODE
server, names = sys.argv[1], json.loads(sys.argv[2])
out = {}
for name in names:
    q = DNSRecord.question(name + ".nyxd.local", "A")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.sendto(q.pack(), (server, 53))
    reply = DNSRecord.parse(s.recv(4096))
    s.close()
    ips = sorted(str(r.rdata) for r in reply.rr if r.rtype == QTYPE.A)
    out[name] = ips if reply.header.rcode == RCODE.NOERROR else RCODE[reply.header.rcode]
print(json.dumps(out))
"""


def _port_elements(ip: str, port: str) -> list[tuple[str, tuple[Any, ...], tuple[Any, ...]]]:
    """The nft map elements one published port of a container at ``ip`` stands for."""
    m = _PORT_RE.match(port)
    assert m, f"unparsable port {port!r}"
    hp, cp = int(m["hp"]), int(m["cp"])
    n = int(m["hp2"]) - hp + 1 if m["hp2"] else 1
    out = []
    for i in range(n):
        value = (ip, cp + i)
        if m["ip"]:
            out.append(("ports_ip", (m["ip"], m["proto"], hp + i), value))
        else:
            out.append(("ports_any", (m["proto"], hp + i), value))
    return out


def _elem_tuple(elem: Any) -> tuple[Any, ...]:
    if isinstance(elem, dict) and "concat" in elem:
        return tuple(elem["concat"])
    if isinstance(elem, dict) and "prefix" in elem:
        return (f"{elem['prefix']['addr']}/{elem['prefix']['len']}",)
    return (elem,)


def _cgroup_ids() -> set[str]:
    """Container cgroups under runc's /nyx parent, any controller (cgroup v1 hybrid or v2)."""
    found: set[str] = set()
    for parent in [Path("/sys/fs/cgroup/nyx"), *Path("/sys/fs/cgroup").glob("*/nyx")]:
        if parent.is_dir():
            found |= {p.name for p in parent.iterdir() if p.is_dir()}
    return found


def accounting(d: Nyxd, names: Iterable[str] = ()) -> list[str]:
    """What in nyxd's host namespace, mount namespace, cgroups, runc root and directories
    its surviving (running) containers and its networks do not account for, or what they
    need and is missing: links, addresses, routes, nft elements, leases, mounts, cgroups,
    runc states, DNS records, files, staging directories. ``[]`` when it is exact.

    ``names``: container names the test used; each (like every container's name and
    hostname) must resolve through the embedded DNS to its container's addresses while it
    runs, and not at all otherwise.
    """
    problems: list[str] = []

    def differ(what: str, have: Any, want: Any) -> None:
        if have != want:
            if isinstance(have, dict) and isinstance(want, dict):
                have, want = set(have.items()), set(want.items())
            extra = sorted(map(str, set(have) - set(want)))
            missing = sorted(map(str, set(want) - set(have)))
            problems.append(f"{what}: unaccounted {extra}, missing {missing}")

    rows = d.client.request("GET", "/v1/containers", params={"all": 1})
    nets = d.client.request("GET", "/v1/networks")
    alive = [c for c in rows if c["state"] == "running"]
    ids = {c["id"] for c in rows}
    live = {c["id"] for c in alive}
    from nyx_plugins_native._driver import veth_name  # the driver the kit runs

    # runc states and cgroups (runc's /nyx parent is shared by every nyxd of this host: only
    # ids this nyxd ever logged count)
    differ(
        "runc states", {i["id"]: i["status"] for i in d.runc_list()}, dict.fromkeys(live, "running")
    )
    ever = set(_HEX64.findall(d.log.read_text(errors="replace"))) | ids
    differ("cgroups", _cgroup_ids() & ever, live)

    # links, addresses, routes of the host namespace
    links = d.ns.ipj("-d", "link", "show")
    kinds = {ln["ifname"]: (ln.get("linkinfo") or {}).get("info_kind") for ln in links}
    ours = {n: k for n, k in kinds.items() if n != "lo" and n not in HOST_LINKS}
    want_veths = {veth_name(c["id"], net) for c in alive for net in c["networks"]}
    want_bridges = {n["interface"] for n in nets}
    differ("veths", {n for n, k in ours.items() if k == "veth"}, want_veths)
    differ("bridges", {n for n, k in ours.items() if k == "bridge"}, want_bridges)
    differ("other links", {n for n, k in ours.items() if k not in ("veth", "bridge")}, set())
    addrs = {
        (ln["ifname"], f"{a['local']}/{a['prefixlen']}")
        for ln in d.ns.ipj("-4", "addr", "show")
        if ln["ifname"] in ours
        for a in ln.get("addr_info", [])
    }
    differ("addresses", addrs, {(n["interface"], n["gateway"]) for n in nets})
    routes = {
        (r["dst"], r.get("dev")) for r in d.ns.ipj("-4", "route", "show") if r.get("dev") in ours
    }
    differ("routes", routes, {(n["subnet"], n["interface"]) for n in nets})

    # nft elements of table ip nyx
    el = d.nyx_elements()
    want: dict[str, set[tuple[Any, ...]]] = {"ports_any": set(), "ports_ip": set()}
    internal = {n["name"] for n in nets if n.get("internal")}
    for c in alive:
        for port in c["ports"]:
            for m, key, value in _port_elements(c["ips"][0], port):
                want[m].add((key, value))
    for m in ("ports_any", "ports_ip"):
        have = {(_elem_tuple(k), _elem_tuple(v)) for k, v in el.get(m, [])}
        differ(f"nft {m}", have, want[m])
    differ(
        "nft internal",
        {_elem_tuple(e)[0] for e in el.get("internal", [])},
        {
            ip
            for c in alive
            for net, ip in zip(c["networks"], c["ips"], strict=False)
            if net in internal
        },
    )
    differ(
        "nft net_subnets",
        {_elem_tuple(e)[0] for e in el.get("net_subnets", [])},
        {n["subnet"] for n in nets},
    )
    differ("nft net_bridges", set(el.get("net_bridges", [])), want_bridges)
    differ(
        "nft same_bridge",
        {_elem_tuple(e) for e in el.get("same_bridge", [])},
        {(b, b) for b in want_bridges},
    )

    # leases
    leases = {}
    for f in (d.state / "native" / "attachments").glob("*.json"):
        rec = json.loads(f.read_text())
        leases[(rec.get("owner", rec.get("container")), rec["network"])] = rec["ip"]
    differ(
        "leases",
        leases,
        {
            (c["id"], net): ip
            for c in alive
            for net, ip in zip(c["networks"], c["ips"], strict=False)
        },
    )

    # mounts in nyxd's mount namespace
    points = set()
    for line in d.mountinfo().splitlines():
        point = line.split(" ")[4]
        if point.startswith(str(d.root)):
            points.add(point)
    differ(
        "mounts",
        points,
        {
            *(str(d.run / "netns" / i) for i in live),
            *(str(d.run / "containers" / i / "rootfs") for i in live),
        },
    )

    # files: per container, records, and no staging directory anywhere
    differ("netns files", {p.name for p in (d.run / "netns").glob("*")}, live)
    differ("monitor dirs", {p.name for p in (d.run / "monitors").glob("*")}, live)
    differ("monitor processes", set(d.monitors().values()), live)
    differ("container run dirs", {p.name for p in (d.run / "containers").glob("*")}, live)
    dns_dirs = {p.name for p in (d.run / "dns").glob("*")}
    differ("DNS provider dirs", dns_dirs - live, set())
    differ("container records", {p.name for p in (d.state / "containers").glob("*")}, ids)
    for rec_dir in (d.state / "containers").glob("*"):
        differ(
            f"files of record {rec_dir.name[:12]}",
            {p.name for p in rec_dir.iterdir()},
            {"container.json", "container.log"},
        )
    differ("state/tmp", {p.name for p in (d.state / "tmp").glob("*")}, set())
    images = d.state / "images"
    differ("images/tmp", {p.name for p in (images / "tmp").glob("*")}, set())
    differ(
        "half-written files",
        {
            str(p.relative_to(d.root))
            for p in d.root.rglob("*")
            if p.name.startswith("index.json.")
            or (p.name.startswith(".") and p.name.endswith(".tmp"))
        },
        set(),
    )
    index = (
        json.loads((images / "index.json").read_text()) if (images / "index.json").exists() else {}
    )
    blobs = {
        b.removeprefix("sha256:") for r in index.get("images", {}).values() for b in r["blobs"]
    }
    layers = {
        x.removeprefix("sha256:")
        for r in index.get("images", {}).values()
        for x in r["image"]["layers"]
    }
    differ("image blobs", {p.name for p in (images / "blobs" / "sha256").glob("*")}, blobs)
    differ("image layers", {p.name for p in (images / "layers").glob("*")}, layers)

    # DNS records: every name the test used answers with its running container's addresses
    names = sorted(set(names) | {c["name"] for c in rows} | {c["hostname"] for c in rows})
    if names:
        r = subprocess.run(
            [
                "nsenter",
                f"--net={d.ns.path}",
                "--",
                sys.executable,
                "-c",
                _DNS_PROBE,
                d.gateway,
                json.dumps(names),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if r.returncode != 0:
            problems.append(f"DNS probe failed: {r.stderr.strip()}")
        else:
            got = json.loads(r.stdout)
            by_name = {n: sorted(c["ips"]) for c in alive for n in (c["name"], c["hostname"])}
            differ(
                "DNS records",
                {n: tuple(v) if isinstance(v, list) else v for n, v in got.items()},
                {n: tuple(by_name[n]) if n in by_name else "NXDOMAIN" for n in names},
            )
    return problems


def assert_accounted(d: Nyxd, names: Iterable[str] = ()) -> None:
    """:func:`accounting` is empty: everything on the host is a survivor's, and complete."""
    problems = accounting(d, names)
    assert not problems, "\n".join(problems)
