"""``internal`` on CNI: nyx's own nftables table, ``inet nyx-cni``, run through the ``nft``
binary.

The CNI ``firewall`` plugin cannot say "this container's traffic must not leave its
subnet", so the driver keeps one small table of its own::

    table inet nyx-cni {
        chain forward {
            type filter hook forward priority filter; policy accept;
            ip saddr 10.89.1.0/24 ip daddr != 10.89.1.0/24 drop comment "nyx-cni net:back 5f0c"
            ip saddr 10.231.0.7 ip daddr != 10.231.0.0/24 drop comment "nyx-cni att:c1:eth0 9e1a"
            ip6 saddr fd00:89:1::/64 ip6 daddr != { fd00:89:1::/64, fe80::/10, ff00::/8 } drop ...
        }
    }

* one ``net:<network>`` rule per subnet of a network created ``internal``;
* one ``att:<container>:<ifname>`` rule per address of an attachment made internal by the
  container (``SetupOptions.internal`` on a network that is not).

Each comment is ``nyx-cni <tag> <digest of the tag's rules>``: the driver finds its rules by
tag, and :meth:`InternalFirewall.set` leaves identical rules alone.

The match is on addresses, never on interfaces: with ``br_netfilter`` on, traffic between
two containers of one bridge also crosses the forward hook with both interfaces = the
bridge, and must pass. Packets to the host's own addresses (the gateway, where embedded DNS
listens) are not forwarded, so they pass too. A drop in any base chain is final, whatever
accepts other tables (iptables' ``FORWARD``, the CNI firewall plugin) hold.

The table exists only while it has a rule: the last deletion deletes the table. The driver
never reads or changes any other table.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterable, Sequence

from nyx_core import FirewallError

__all__ = [
    "FAMILY",
    "TABLE",
    "InternalFirewall",
    "att_tag",
    "att_tag_prefix",
    "drop_rules",
    "net_tag",
]

FAMILY = "inet"
TABLE = "nyx-cni"
CHAIN = "forward"
_OWNER = "nyx-cni"
_CHAIN_SPEC = "type filter hook forward priority filter; policy accept;"

_ON_LINK6 = "fe80::/10, ff00::/8"
"""IPv6 destinations an internal rule lets by: with ``br_netfilter`` the bridged neighbour
solicitations (to a solicited-node multicast address) cross the forward hook too, and
dropping them cuts two containers of one internal bridge apart."""

Address = ipaddress.IPv4Interface | ipaddress.IPv6Interface
Subnet = ipaddress.IPv4Network | ipaddress.IPv6Network


def net_tag(network: str) -> str:
    """The tag of a network's rules (network names are at most 63 characters)."""
    return f"net:{network}"


def _short(container_id: str) -> str:
    # nft comments hold 128 bytes; very long ids are hashed (GC hashes the valid ids too)
    if len(container_id) <= 80:
        return container_id
    return "h" + hashlib.sha256(container_id.encode()).hexdigest()[:32]


def att_tag_prefix(container_id: str) -> str:
    """The start of every tag of a container's attachment rules."""
    return f"att:{_short(container_id)}:"


def att_tag(container_id: str, ifname: str) -> str:
    """The tag of one attachment's rules."""
    return att_tag_prefix(container_id) + ifname


def drop_rules(sources: Iterable[Subnet | Address]) -> list[str]:
    """One drop rule per source: its traffic to anywhere outside its subnet is dropped.

    A subnet (``10.89.1.0/24``) stands for a whole network, an address with prefix
    (``10.231.0.7/24``) for one attachment (source = the address, allowed = its subnet).
    """
    rules = []
    for src in sources:
        if isinstance(src, ipaddress.IPv4Network | ipaddress.IPv6Network):
            saddr, subnet = str(src), src
        else:
            saddr, subnet = str(src.ip), src.network
        if subnet.version == 4:
            rules.append(f"ip saddr {saddr} ip daddr != {subnet} drop")
        else:  # neighbour discovery (multicast, link-local) stays on the link: let it by
            rules.append(f"ip6 saddr {saddr} ip6 daddr != {{ {subnet}, {_ON_LINK6} }} drop")
    return rules


Runner = Callable[[Sequence[str], str | None], tuple[int, str, str]]


def _run(argv: Sequence[str], stdin: str | None) -> tuple[int, str, str]:
    proc = subprocess.run(
        list(argv), input=stdin, capture_output=True, text=True, timeout=30, check=False
    )
    return proc.returncode, proc.stdout, proc.stderr


class InternalFirewall:
    """The ``inet nyx-cni`` table, in the network namespace of the calling thread.

    Every method is serialised by one lock; ``runner`` (argv, stdin) -> (rc, out, err)
    is the seam unit tests replace.
    """

    def __init__(self, nft: str | None = None, runner: Runner | None = None) -> None:
        self._nft = nft
        self._runner = runner or _run
        self._lock = threading.Lock()

    def binary(self) -> str:
        """The ``nft`` executable; :class:`FirewallError` naming the package when absent."""
        if self._nft is None:
            path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
            self._nft = shutil.which("nft", path=path)
        if self._nft is None:
            raise FirewallError(
                "internal networks on the cni driver need the nft binary: apt-get install nftables"
            )
        return self._nft

    def _exec(self, args: Sequence[str], stdin: str | None = None) -> tuple[int, str, str]:
        try:
            return self._runner([self.binary(), *args], stdin)
        except (OSError, subprocess.SubprocessError) as exc:
            raise FirewallError(f"nft {' '.join(args)}: {exc}") from exc

    def available(self) -> bool:
        """True when the ``nft`` binary is installed."""
        try:
            self.binary()
        except FirewallError:
            return False
        return True

    def _list(self) -> dict[str, tuple[str, list[int]]]:
        """tag -> (digest of its rules, their handles), from the table's comments."""
        rc, out, err = self._exec(["-j", "list", "table", FAMILY, TABLE])
        if rc != 0:
            if "No such file or directory" in err:
                return {}
            raise FirewallError(f"nft list table {FAMILY} {TABLE}: {err.strip()}")
        try:
            objs = json.loads(out).get("nftables", [])
        except (json.JSONDecodeError, AttributeError) as exc:
            raise FirewallError(f"nft list table {FAMILY} {TABLE}: unreadable JSON") from exc
        tags: dict[str, tuple[str, list[int]]] = {}
        for obj in objs:
            rule = obj.get("rule") if isinstance(obj, dict) else None
            if not isinstance(rule, dict) or rule.get("chain") != CHAIN:
                continue
            words = str(rule.get("comment") or "").split()
            if len(words) == 3 and words[0] == _OWNER:
                tags.setdefault(words[1], (words[2], []))[1].append(int(rule["handle"]))
        return tags

    def _apply(self, batch: str, what: str) -> None:
        rc, _out, err = self._exec(["-f", "-"], batch)
        if rc != 0:
            raise FirewallError(f"nft table {FAMILY} {TABLE}: cannot {what}: {err.strip()}")

    def tags(self) -> list[str]:
        """The tags that have rules now (none when the table does not exist)."""
        with self._lock:
            return sorted(self._list())

    def set(self, tag: str, rules: Sequence[str]) -> bool:
        """Make ``rules`` the rules of ``tag``, in one batch (creating the table). Nothing
        changes (False) when the tag has exactly these rules already."""
        digest = hashlib.sha256("\n".join(rules).encode()).hexdigest()[:8]
        with self._lock:
            found = self._list()
            old = found.get(tag)
            if old is not None and old[0] == digest:
                return False
            lines = [f"table {FAMILY} {TABLE} {{", f"  chain {CHAIN} {{ {_CHAIN_SPEC} }}", "}"]
            if old is not None:
                lines += [f"delete rule {FAMILY} {TABLE} {CHAIN} handle {h}" for h in old[1]]
            comment = json.dumps(f"{_OWNER} {tag} {digest}")
            lines += [f"add rule {FAMILY} {TABLE} {CHAIN} {r} comment {comment}" for r in rules]
            self._apply("\n".join(lines) + "\n", f"set the rules of {tag}")
            return True

    def delete(self, match: Callable[[str], bool]) -> list[str]:
        """Delete the rules of every tag ``match`` accepts; the table too when nothing is
        left. Returns the deleted tags."""
        with self._lock:
            found = self._list()
            gone = sorted(t for t in found if match(t))
            if not gone:
                return []
            if len(gone) == len(found):
                batch = f"delete table {FAMILY} {TABLE}\n"
            else:
                batch = "".join(
                    f"delete rule {FAMILY} {TABLE} {CHAIN} handle {h}\n"
                    for t in gone
                    for h in found[t][1]
                )
            self._apply(batch, f"delete the rules of {', '.join(gone)}")
            return gone
