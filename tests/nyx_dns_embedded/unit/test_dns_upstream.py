"""Reading the host's resolv.conf: nameservers, search domains, re-reading on change."""

from __future__ import annotations

import os
from pathlib import Path

from nyx_dns_embedded import parse_resolv_conf
from nyx_dns_embedded._upstream import Upstreams


def test_parse_nameservers_and_search() -> None:
    conf = parse_resolv_conf(
        "# comment\n"
        "nameserver 192.0.2.1\n"
        "nameserver fe80::1%eth0  # link-local with zone\n"
        "nameserver not-an-ip\n"
        "nameserver 192.0.2.1\n"
        "nameserver 192.0.2.2\n"
        "nameserver 192.0.2.3\n"
        "domain old.example\n"
        "search Corp.Example. lab.example\n"
        "options ndots:2\n"
    )
    # at most 3; a link-local server keeps its zone (without it no link is named)
    assert conf.nameservers == ("192.0.2.1", "fe80::1%eth0", "192.0.2.2")
    assert conf.search == ("corp.example", "lab.example")  # the last search/domain wins


def test_parse_empty_and_unspecified() -> None:
    assert parse_resolv_conf("").nameservers == ()
    assert parse_resolv_conf("nameserver 0.0.0.0\n").nameservers == ("127.0.0.1",)
    assert parse_resolv_conf("nameserver ::\n").nameservers == ("::1",)


def test_parse_ipv6_nameservers() -> None:
    """IPv6 servers are used as written (normalised); a link-local one needs its zone
    (kept, an interface name or index), a zone on a global address means nothing."""
    conf = parse_resolv_conf(
        "nameserver 2001:DB8:0::53\n"
        "nameserver fe80::1\n"  # no zone: names no link, unusable
        "nameserver fe80::2%3\n"
        "nameserver 2001:db8::54%eth0\n"
    )
    assert conf.nameservers == ("2001:db8::53", "fe80::2%3", "2001:db8::54")
    bad = parse_resolv_conf("nameserver fe80::1%eth0/../x\nnameserver fe80::1%\n")
    assert bad.nameservers == ()


def test_upstreams_reread_when_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 192.0.2.1\n")
    up = Upstreams(path, check_interval=0)
    assert up.servers() == ("192.0.2.1",)
    path.write_text("nameserver 192.0.2.2\nnameserver 192.0.2.3\n")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert up.servers() == ("192.0.2.2", "192.0.2.3")
    path.unlink()
    assert up.servers() == ()
    path.write_text("nameserver 192.0.2.4\n")
    assert up.servers() == ("192.0.2.4",)


def test_upstreams_rechecked_only_after_interval(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 192.0.2.1\n")
    up = Upstreams(path, check_interval=3600)
    path.write_text("nameserver 192.0.2.9\n")
    assert up.servers() == ("192.0.2.1",)
    up.reload()
    assert up.servers() == ("192.0.2.9",)


def test_own_address_is_never_an_upstream(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 10.231.0.1\nnameserver 192.0.2.1\n")
    up = Upstreams(path, exclude=frozenset({"10.231.0.1"}))
    assert up.servers() == ("192.0.2.1",)
    assert up.conf().nameservers == ("10.231.0.1", "192.0.2.1")
