"""A real-looking host for kernel tests: an uplink with a default route, a LAN neighbour, an
unprivileged uid.

A namespace with only ``lo`` hides the bugs real hosts show: masquerade picking the uplink
address for the host's own packets, ``127.0.0.1`` publishes reachable from the LAN,
containers reaching the host's loopback services. :class:`HostTopology` builds, in four
``ip -batch`` calls (about 10 ms), a dual-stack host::

    "internet" ns                 host ns (the driver runs here)            LAN neighbour ns
    lo   198.18.0.10/32           uplink0 203.0.113.2/24                    eth0 198.51.100.2/24
         2001:db8:18::10/128              2001:db8:113::2/64                     2001:db8:100::2/64
    eth0 203.0.113.1/24 <-------> default via 203.0.113.1
         2001:db8:113::1/64       default via 2001:db8:113::1
    forwarding on, no routes:     lan0    198.51.100.1/24 <---------------> (no default route)
    anything else is answered             2001:db8:100::1/64
    "net unreachable" at once     rp_filter=2 (loose, as systemd sets it)

IPv6 addresses are added ``nodad`` (usable at once); IPv6 forwarding stays off in the host
namespace, as on a host that has not enabled it (a driver turns it on).

* The internet namespace holds an outside "server" address, :data:`INTERNET_SERVER_IP`,
  which the host reaches only through its default route. It has no route back to the
  container subnets: a container reaches it only when its traffic is masqueraded to
  :data:`UPLINK_HOST_IP`.
* The neighbour reaches only the host's LAN address until a test asks for more:
  :meth:`Neighbour.route_to_host` routes a subnet (the containers') through the host,
  :meth:`Neighbour.route_localhost_to_host` makes it send its ``127.0.0.1`` traffic to the
  host, as a hostile neighbour can (see there for what that takes).
* :class:`Unprivileged` runs a command or a Python snippet as ``nobody`` (65534) inside a
  namespace, for "the other user's side" of file and socket checks.

Every namespace is named ``nyxt-<role>-<pid>-<n>`` so the kit's session-end leak check
(:func:`~nyx_core.testing._netns.leaked_namespaces`) covers them all.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._netns import Netns, entered, new_name

__all__ = [
    "HOST_LINKS",
    "INTERNET_SERVER_IP",
    "INTERNET_SERVER_IP6",
    "LAN_HOST_IP",
    "LAN_HOST_IP6",
    "LAN_NEIGHBOUR_IP",
    "LAN_NEIGHBOUR_IP6",
    "UNPRIVILEGED_UID",
    "UPLINK_GATEWAY_IP",
    "UPLINK_GATEWAY_IP6",
    "UPLINK_HOST_IP",
    "UPLINK_HOST_IP6",
    "HostTopology",
    "Neighbour",
    "Unprivileged",
    "route_localhost_via",
]

UPLINK_HOST_IP = "203.0.113.2"
"""The host's address on ``uplink0`` (what masquerade of container egress picks)."""
UPLINK_GATEWAY_IP = "203.0.113.1"
"""The internet namespace's ``eth0``: the host's default gateway."""
INTERNET_SERVER_IP = "198.18.0.10"
"""An outside server in the internet namespace, reached only through the default route."""
LAN_HOST_IP = "198.51.100.1"
"""The host's address on ``lan0``."""
LAN_NEIGHBOUR_IP = "198.51.100.2"
"""The LAN neighbour's ``eth0``."""
UPLINK_HOST_IP6 = "2001:db8:113::2"
"""The host's IPv6 address on ``uplink0`` (what IPv6 masquerade picks)."""
UPLINK_GATEWAY_IP6 = "2001:db8:113::1"
"""The internet namespace's IPv6 address on ``eth0``: the host's IPv6 default gateway."""
INTERNET_SERVER_IP6 = "2001:db8:18::10"
"""The outside server's IPv6 address, reached only through the IPv6 default route."""
LAN_HOST_IP6 = "2001:db8:100::1"
"""The host's IPv6 address on ``lan0``."""
LAN_NEIGHBOUR_IP6 = "2001:db8:100::2"
"""The LAN neighbour's IPv6 address on ``eth0``."""
HOST_LINKS = ("uplink0", "lan0")
"""The links the topology adds to the host namespace (besides ``lo``)."""
UNPRIVILEGED_UID = 65534
"""``nobody``: the unprivileged local user of the file and socket checks."""


def _batch(ns: str | None, lines: Sequence[str]) -> None:
    argv = ["ip", "-n", ns, "-batch", "-"] if ns else ["ip", "-batch", "-"]
    proc = subprocess.run(argv, input="\n".join(lines) + "\n", text=True, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")


def _write_sysctls(ns: Netns, values: Mapping[str, str]) -> None:
    with entered(ns):
        for key, value in values.items():
            Path("/proc/sys/" + key.replace(".", "/")).write_text(value)


def route_localhost_via(ns: Netns, gateway: str, dev: str = "eth0") -> None:
    """Make ``ns`` send its ``127.0.0.1`` traffic to ``gateway`` through ``dev``, as a LAN
    neighbour or a container with NET_ADMIN can (found on Linux 6.x; no raw socket needed):

    * ``127.0.0.1/8`` removed from ``ns``'s ``lo`` (that also drops the ``local
      127.0.0.0/8`` and ``local 127.0.0.1`` routes of table ``local``, which is looked up
      before ``main``). Deleting only those routes is not enough: the answers come *from*
      127.0.0.1, and a source that is one of our own addresses is a martian.
    * a route ``127.0.0.1/32 via gateway``; the packets leave with ``dev``'s address as
      source.
    * ``route_localnet=1`` on ``dev``, without which answers from 127.0.0.1 are dropped as
      martians (a TCP connect then times out although the far side answered).

    Whether the far side accepts such a packet is its business: Linux drops it as a martian
    destination unless something rewrites it before routing (a DNAT keyed on the
    destination alone) or the arriving link has ``route_localnet=1``.
    """
    _batch(
        ns.name,
        ["addr del 127.0.0.1/8 dev lo", f"route add 127.0.0.1/32 via {gateway} dev {dev}"],
    )
    _write_sysctls(ns, {f"net.ipv4.conf.{dev}.route_localnet": "1"})


def _python() -> str:
    for cand in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(cand, os.X_OK):
            return cand
    return sys.executable


class Neighbour(Netns):
    """The LAN neighbour: ``eth0`` on the host's ``lan0`` link, no default route."""

    def route_to_host(self, subnet: str | ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
        """Route ``subnet`` (e.g. the container subnet, IPv4 or IPv6) through the host's LAN
        address of the same family."""
        via = LAN_HOST_IP6 if ipaddress.ip_network(str(subnet)).version == 6 else LAN_HOST_IP
        self.ip("route", "replace", str(subnet), "via", via, "dev", "eth0")

    def route_localhost_to_host(self) -> None:
        """Send this namespace's traffic for ``127.0.0.1`` to the host, as an attacker can
        (:func:`route_localhost_via` the host's LAN address)."""
        route_localhost_via(self, LAN_HOST_IP)


@dataclass
class HostTopology:
    """The host namespace with its uplink to :attr:`internet` and its LAN :attr:`lan`."""

    host: Netns
    internet: Netns
    lan: Neighbour

    @classmethod
    def create(cls) -> HostTopology:
        """Build the three namespaces and their links (delete with :meth:`delete`)."""
        host, inet, lan = new_name("host"), new_name("inet"), new_name("lan")
        _batch(None, [f"netns add {n}" for n in (host, inet, lan)])
        topo = cls(Netns(host), Netns(inet), Neighbour(lan))
        try:
            _batch(
                host,
                [
                    "link set lo up",
                    f"link add uplink0 type veth peer name eth0 netns {inet}",
                    f"link add lan0 type veth peer name eth0 netns {lan}",
                    f"addr add {UPLINK_HOST_IP}/24 dev uplink0",
                    f"addr add {LAN_HOST_IP}/24 dev lan0",
                    f"addr add {UPLINK_HOST_IP6}/64 dev uplink0 nodad",
                    f"addr add {LAN_HOST_IP6}/64 dev lan0 nodad",
                    "link set uplink0 up",
                    "link set lan0 up",
                    f"route add default via {UPLINK_GATEWAY_IP} dev uplink0",
                    f"route add default via {UPLINK_GATEWAY_IP6} dev uplink0",
                ],
            )
            _batch(
                inet,
                [
                    "link set lo up",
                    f"addr add {INTERNET_SERVER_IP}/32 dev lo",
                    f"addr add {INTERNET_SERVER_IP6}/128 dev lo",
                    f"addr add {UPLINK_GATEWAY_IP}/24 dev eth0",
                    f"addr add {UPLINK_GATEWAY_IP6}/64 dev eth0 nodad",
                    "link set eth0 up",
                ],
            )
            _batch(
                lan,
                [
                    "link set lo up",
                    f"addr add {LAN_NEIGHBOUR_IP}/24 dev eth0",
                    f"addr add {LAN_NEIGHBOUR_IP6}/64 dev eth0 nodad",
                    "link set eth0 up",
                ],
            )
            # a real distro host: loose reverse-path filtering (systemd's 50-default.conf)
            _write_sysctls(
                topo.host,
                {"net.ipv4.conf.all.rp_filter": "2", "net.ipv4.conf.default.rp_filter": "2"},
            )
            # the "internet" answers at once for addresses it does not have, like a router
            # without a route would, instead of swallowing the packets (no slow timeouts)
            _write_sysctls(
                topo.internet,
                {
                    "net.ipv4.ip_forward": "1",
                    "net.ipv4.icmp_ratelimit": "0",
                    "net.ipv6.conf.all.forwarding": "1",
                    "net.ipv6.icmp.ratelimit": "0",
                },
            )
        except BaseException:
            topo.delete()
            raise
        return topo

    @property
    def namespaces(self) -> list[Netns]:
        return [self.host, self.internet, self.lan]

    def delete(self) -> None:
        """Delete the three namespaces (their links go with them); never raises."""
        subprocess.run(
            ["ip", "-force", "-batch", "-"],
            input="".join(f"netns del {ns.name}\n" for ns in self.namespaces),
            text=True,
            capture_output=True,
        )


@dataclass(frozen=True)
class Unprivileged:
    """An unprivileged local user (``nobody`` by default) for "the other user's side".

    ``run`` and ``python`` start a process with that uid and gid, no supplementary group,
    ``/`` as working directory and a minimal environment, inside ``ns`` when given (the
    process is forked from a thread switched into it: no ``ip netns exec``, no new mount
    namespace, so it sees the same files as the test).
    """

    uid: int = UNPRIVILEGED_UID
    gid: int = UNPRIVILEGED_UID
    env: Mapping[str, str] = field(
        default_factory=lambda: {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/"}
    )

    def run(
        self, argv: Sequence[str], ns: Netns | None = None, *, timeout: float = 30, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as this user (in ``ns``); never raises on a non-zero exit."""
        opts: dict[str, Any] = {
            "user": self.uid,
            "group": self.gid,
            "extra_groups": [],
            "cwd": "/",
            "env": dict(self.env),
            "text": True,
            "capture_output": True,
            "timeout": timeout,
            "check": False,
        }
        opts.update(kw)
        if ns is None:
            return subprocess.run(list(argv), **opts)
        with entered(ns):
            return subprocess.run(list(argv), **opts)

    def python(
        self, code: str, ns: Netns | None = None, *args: str, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run a Python snippet (standard library only) as this user (in ``ns``);
        ``sys.argv[1:]`` is ``args``. The interpreter is the system's ``python3`` when there
        is one (the test's own may live where this user cannot reach, e.g. under /root)."""
        return self.run([_python(), "-I", "-c", code, *args], ns, timeout=timeout)

    def can_read(self, path: str | os.PathLike[str]) -> bool:
        """Whether this user can read ``path`` (open a file, list a directory)."""
        code = (
            "import os, sys; p = sys.argv[1]\n"
            "os.listdir(p) if os.path.isdir(p) else open(p, 'rb').close()"
        )
        return self.python(code, None, os.fspath(path)).returncode == 0
