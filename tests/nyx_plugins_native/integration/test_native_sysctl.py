"""Sysctls of a namespace written through a private procfs instance, and the bridge's
multicast snooping: the two kernel-side changes that keep a setup flat with many
containers (docs/native-driver.md, "Many containers")."""

from __future__ import annotations

import errno
import ipaddress
import os
from collections.abc import Iterator

import pytest

from nyx_core.testing import Netns, entered
from nyx_plugins_native import _kernel, _netlink

pytestmark = pytest.mark.kernel


@pytest.fixture
def two_ns() -> Iterator[tuple[Netns, Netns]]:
    a, b = Netns.create("sysa"), Netns.create("sysb")
    try:
        a.ip("link", "add", "dm0", "type", "veth", "peer", "name", "dm0", "netns", b.name)
        yield a, b
    finally:
        a.delete()
        b.delete()


def test_write_goes_to_the_calling_threads_namespace_through_a_private_proc(
    two_ns: tuple[Netns, Netns],
) -> None:
    a, b = two_ns
    with entered(a):
        _kernel.write_netns_sysctl("net/ipv6/conf/dm0/disable_ipv6", "1")
    # the private instance was used (a kernel without the mount API would fall back
    # silently, and the setups would grow with the number of namespaces again)
    assert _kernel._private_proc_off is None
    assert a.sysctl("net.ipv6.conf.dm0.disable_ipv6") == "1"
    assert b.sysctl("net.ipv6.conf.dm0.disable_ipv6") == "0"
    with entered(b):
        _kernel.write_netns_sysctl("net/ipv6/conf/dm0/accept_ra", "0")
    assert b.sysctl("net.ipv6.conf.dm0.accept_ra") == "0"
    assert a.sysctl("net.ipv6.conf.dm0.accept_ra") == "1"


def test_without_the_mount_api_it_writes_through_proc_sys(
    two_ns: tuple[Netns, Netns], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = two_ns
    monkeypatch.setattr(_kernel, "_private_proc_off", "fsopen: Function not implemented")
    with entered(b):
        _kernel.write_netns_sysctl("net/ipv6/conf/dm0/disable_ipv6", "1")
    assert b.sysctl("net.ipv6.conf.dm0.disable_ipv6") == "1"
    assert a.sysctl("net.ipv6.conf.dm0.disable_ipv6") == "0"


@pytest.mark.parametrize("private", [True, False], ids=["private proc", "/proc/sys"])
def test_a_missing_key_is_file_not_found_either_way(
    two_ns: tuple[Netns, Netns], monkeypatch: pytest.MonkeyPatch, private: bool
) -> None:
    if not private:
        monkeypatch.setattr(_kernel, "_private_proc_off", "test")
    with entered(two_ns[0]), pytest.raises(FileNotFoundError):
        _kernel.write_netns_sysctl("net/ipv6/conf/nosuchlink/disable_ipv6", "1")


def test_a_new_bridge_has_multicast_snooping_off_an_existing_one_keeps_it(
    two_ns: tuple[Netns, Netns],
) -> None:
    a, _b = two_ns
    a.ip("link", "add", "adm0", "type", "bridge", "mcast_snooping", "1")
    with entered(a):
        _netlink.ensure_bridge("new0", ipaddress.IPv4Interface("10.239.0.1/24"))
        _netlink.ensure_bridge("adm0", ipaddress.IPv4Interface("10.239.1.1/24"))

    def snooping(name: str) -> int:
        return int(a.ipj("-d", "link", "show", name)[0]["linkinfo"]["info_data"]["mcast_snooping"])

    assert snooping("new0") == 0
    assert snooping("adm0") == 1


@pytest.mark.parametrize(
    ("err", "falls_back"),
    [(errno.ENOSYS, True), (errno.EPERM, True), (errno.EMFILE, False), (errno.ENOMEM, False)],
)
def test_a_kernel_without_the_api_falls_back_a_shortage_is_an_error(
    two_ns: tuple[Netns, Netns], monkeypatch: pytest.MonkeyPatch, err: int, falls_back: bool
) -> None:
    """ENOSYS or EPERM (an old kernel, a seccomp filter): /proc/sys from then on. Out of
    descriptors or memory: this write fails, the next one tries the private proc again."""
    a, _b = two_ns
    monkeypatch.setattr(_kernel, "_private_proc_off", None)

    def refuse(number: int, *args: object) -> int:
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(_kernel, "_syscall", refuse)
    with entered(a):
        if falls_back:
            _kernel.write_netns_sysctl("net/ipv6/conf/dm0/disable_ipv6", "1")
        else:
            with pytest.raises(OSError) as caught:
                _kernel.write_netns_sysctl("net/ipv6/conf/dm0/disable_ipv6", "1")
            assert caught.value.errno == err
    assert (_kernel._private_proc_off is not None) is falls_back
    assert a.sysctl("net.ipv6.conf.dm0.disable_ipv6") == ("1" if falls_back else "0")
