"""Every check of DnsProviderConformance can fail: the example ``hosts`` provider passes
the suite (tests/examples/test_hosts_dns.py), and each deliberately broken variant of it
(kit_dns.py) fails the check it was made for, with that check's message."""

from __future__ import annotations

import pytest

from nyx_core.testing import DnsProviderConformance

pytest_plugins = ["pytester"]

# (broken provider, the check it must fail, a piece of the failure message)
CASES = [
    ("kitdns-not-installed", "test_entry_point_is_installed", "assert 'kitdns-not-installed' in"),
    (
        "kitdns-missing-resolv-conf",
        "test_loads_and_implements_every_dns_hook",
        "nyx_dns_resolv_conf",
    ),
    (
        "kitdns-not-installed",
        "test_unknown_provider_lists_this_one",
        "assert 'kitdns-not-installed' in",
    ),
    (
        "kitdns-start-twice-fails",
        "test_start_and_stop_are_idempotent",
        "cannot listen on 10.231.0.1",
    ),
    (
        "kitdns-stop-keeps-sockets",
        "test_start_and_stop_are_idempotent",
        "is still bound after nyx_dns_stop",
    ),
    ("kitdns-no-ptr", "test_register_answers_at_once", "PTR of 10.231.0.2"),
    ("kitdns-udp-only", "test_answers_over_tcp", "TCP query kit-web.nyxd.local A from"),
    (
        "kitdns-appends-on-replace",
        "test_register_again_replaces_the_records",
        "not the new address only",
    ),
    (
        "kitdns-keeps-records",
        "test_deregister_removes_the_records",
        "kit-web.nyxd.local still answers after deregister",
    ),
    (
        "kitdns-ignores-scoping",
        "test_names_are_scoped_to_shared_networks",
        "resolved kit-b of network kit-b",
    ),
    (
        "kitdns-never-forwards",
        "test_other_names_are_forwarded_to_the_upstream",
        "assert [] == ['198.18.0.53']",
    ),
    (
        "kitdns-forwards-for-internal",
        "test_internal_container_gets_names_but_no_forwarding",
        "an internal container got ['198.18.0.53'] for an outside name",
    ),
    (
        "kitdns-wrong-nameserver",
        "test_resolv_conf_points_at_the_provider",
        "every one must be gateway_ip 10.231.0.1",
    ),
    # IPv6 checks: these providers declare IPv6 (nyx_dns_ipv6 True)
    (
        "kitdns-v4-listener-only",
        "test_ipv6_answers_on_gateway_ip6",
        "to [2001:db8:231::1]:5353 got no answer",
    ),
    ("kitdns-no-aaaa", "test_ipv6_aaaa_answers", "AAAA kit-web (over IPv4): []"),
    ("kitdns-no-ptr6", "test_ipv6_ptr_under_ip6_arpa", "PTR of 2001:db8:231::2 (over IPv4)"),
    (
        "kitdns-v4-nameserver-only",
        "test_ipv6_resolv_conf_lists_gateway_ip6",
        "does not list gateway6 2001:db8:231::1",
    ),
    (
        "kitdns-trusts-gateway6",
        "test_ipv6_spoofed_host_source_gets_no_forwarding",
        "with the host's source 2001:db8:231::1 was forwarded",
    ),
]

INNER = """
import pytest
from nyx_dns_hosts import HostsDnsSettings
from nyx_core.testing import DnsProviderConformance


class TestBroken(DnsProviderConformance):
    @pytest.fixture
    def nyx_dns_provider_name(self):
        return {provider!r}

    @pytest.fixture
    def nyx_dns_upstream(self):
        return lambda ip, port: [HostsDnsSettings(upstream=[f"{{ip}}:{{port}}"], timeout=1.0)]

    @pytest.fixture
    def nyx_dns_ipv6(self):
        return {ipv6!r}
"""


@pytest.mark.kernel
@pytest.mark.parametrize(
    ("provider", "check", "message"), CASES, ids=[f"{c[1]}-{c[0]}" for c in CASES]
)
def test_the_check_fails_on_the_broken_provider(
    pytester: pytest.Pytester, require_kernel: None, provider: str, check: str, message: str
) -> None:
    pytester.makeconftest('pytest_plugins = ["nyx_core.testing"]\n')
    ipv6 = check.startswith("test_ipv6_")
    pytester.makepyfile(test_broken=INNER.format(provider=provider, ipv6=ipv6))
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", f"test_broken.py::TestBroken::{check}"
    )
    out = result.stdout.str()
    assert result.parseoutcomes().get("failed") == 1, out
    assert message in out, out


@pytest.mark.kernel
def test_ipv6_checks_are_skipped_for_a_provider_that_does_not_declare_it(
    pytester: pytest.Pytester, require_kernel: None
) -> None:
    """The example provider serves IPv6, but says it does not: every IPv6 check is
    skipped with that reason (and none fails)."""
    pytester.makeconftest('pytest_plugins = ["nyx_core.testing"]\n')
    pytester.makepyfile(test_v4=INNER.format(provider="hosts", ipv6=False))
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "-rs", "-k", "test_ipv6_", "test_v4.py"
    )
    out = result.stdout.str()
    assert result.parseoutcomes() == {"skipped": 5, "deselected": 12}, out
    assert "SKIPPED [5]" in out and "provider does not declare IPv6" in out, out


def test_every_check_has_a_broken_example() -> None:
    checks = {name for name in dir(DnsProviderConformance) if name.startswith("test_")}
    assert checks == {c[1] for c in CASES}
