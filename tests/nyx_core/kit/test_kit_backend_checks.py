"""Every check of BackendConformance can fail: the reference driver ``kit-bridge`` passes
the whole suite (declaring every capability the suite checks), and each deliberately
broken variant of it (kit_bridge.py) fails the check it was made for, with that check's
message. The broken drivers run through pytester, as a third party's suite would."""

from __future__ import annotations

import pytest

from nyx_core.testing import BackendConformance

pytest_plugins = ["pytester"]


class TestKitBridgeConformance(BackendConformance):
    """The good reference driver passes everything, nothing skipped."""

    @pytest.fixture
    def nyx_driver_name(self) -> str:
        return "kit-bridge"


# (broken driver, the check it must fail, a piece of the failure message)
CASES = [
    ("kit-not-installed", "test_entry_point_is_installed", "assert 'kit-not-installed' in"),
    (
        "kit-missing-teardown",
        "test_loads_and_implements_every_backend_hook",
        "nyx_backend_teardown",
    ),
    ("kit-not-installed", "test_unknown_driver_lists_this_one", "assert 'kit-not-installed' in"),
    ("kit-not-idempotent-ensure", "test_ensure_network_is_idempotent", "kbens"),
    ("kit-keeps-host-veth", "test_setup_then_teardown_leaves_host_as_it_was", "left behind"),
    (
        "kit-leaves-link-in-container",
        "test_teardown_leaves_the_container_as_it_was",
        "teardown left the container's namespace changed: links: left behind [('kitleft0'",
    ),
    ("kit-teardown-of-unknown-fails", "test_teardown_twice_and_never_set_up", "not set up"),
    (
        "kit-second-setup-succeeds",
        "test_second_setup_of_the_same_attachment_is_refused",
        "DID NOT RAISE",
    ),
    ("kit-teardown-needs-the-netns", "test_teardown_after_netns_is_gone", "no netns"),
    (
        "kit-fails-on-stale-netns",
        "test_teardown_when_the_netns_is_a_stale_file",
        "is a stale file, not a netns",
    ),
    ("kit-accepts-stale-netns", "test_setup_on_a_stale_netns_file_is_refused", "DID NOT RAISE"),
    ("kit-no-rollback", "test_failed_setup_leaves_nothing", "already on network"),
    (
        "kit-racy-leases",
        "test_concurrent_setups_get_distinct_addresses",
        "the same address went to two containers",
    ),
    (
        "kit-never-releases",
        "test_leases_are_released_and_reused",
        "cycle 6 of 15 (5 addresses; is the lease released at teardown?)",
    ),
    ("kit-reports-wrong-prefix", "test_setup_result_describes_the_container", "/32 is not"),
    ("kit-leaves-interface-down", "test_interfaces_are_up_with_a_default_route", "eth0 is down"),
    ("kit-no-default-route", "test_interfaces_are_up_with_a_default_route", "default routes"),
    ("kit-host-side-down", "test_interfaces_are_up_with_a_default_route", "has no carrier"),
    (
        "kit-isolates-containers",
        "test_two_containers_exchange_a_packet",
        "container conf-pb cannot reach conf-pa",
    ),
    ("kit-gateway-added-late", "test_gateway_ip_is_on_a_host_link", "is on no host link"),
    (
        "kit-nats-to-the-gateway",
        "test_gateway_ip_is_on_a_host_link",
        "the host saw the container's connection from",
    ),
    ("kit-allows-port-conflicts", "test_port_conflict_is_refused_and_changes_nothing", "RAISE"),
    (
        "kit-reports-no-gateway",
        "test_published_port_answers_on_the_gateway_address",
        "declares publishes_ports but its setup reports no gateway",
    ),
    (
        "kit-ignores-ports",
        "test_published_port_answers_on_the_gateway_address",
        "published port 10.231.0.1:18084 -> 8084: ConnectionRefusedError",
    ),
    (
        "kit-leaves-bridge-on-remove",
        "test_network_create_and_remove_leave_the_host_as_it_was",
        "network_create then network_remove: addresses: left behind",
    ),
    (
        "kit-accepts-unknown-options",
        "test_network_create_refuses_what_it_cannot_honour",
        "DID NOT RAISE",
    ),
    (
        "kit-internal-without-enforcing",
        "test_network_create_refuses_what_it_cannot_honour",
        "DID NOT RAISE",
    ),
    (
        "kit-teardown-only-first-network",
        "test_container_on_two_networks",
        "one teardown of a container on two networks",
    ),
    (
        "kit-ignores-internal",
        "test_internal_network_reaches_a_peer_but_not_the_internet",
        "a container of internal network kit-int reached 198.18.0.10",
    ),
    (
        "kit-ignores-static-addresses",
        "test_static_address_and_mac_are_honoured",
        "asked for 10.231.0.253, the result reports",
    ),
    (
        "kit-ignores-static-ipv6",
        "test_static_ipv6_address_is_honoured",
        "asked for 10.231.0.252 and fd00:231::beef, the result reports",
    ),
    (
        "kit-ipv6-after-dad",
        "test_ipv6_addresses_of_both_families_and_a_default_route",
        "is tentative right after setup: duplicate address detection",
    ),
    (
        "kit-no-default-route6",
        "test_ipv6_addresses_of_both_families_and_a_default_route",
        "no default IPv6 route via the network's gateway fd00:231::1",
    ),
    (
        "kit-bridges-ipv4-only",
        "test_two_containers_exchange_a_packet_over_ipv6",
        "container conf-6b cannot reach conf-6a at [fd00:231::",
    ),
    (
        "kit-publishes-ipv4-only",
        "test_published_port_answers_over_ipv6",
        "published port [fd00:231::1]:18087 -> 8087: ConnectionRefusedError",
    ),
]

INNER = """
import pytest
from nyx_core.testing import BackendConformance


class TestBroken(BackendConformance):
    @pytest.fixture
    def nyx_driver_name(self):
        return {driver!r}
"""


@pytest.mark.kernel
@pytest.mark.parametrize(
    ("driver", "check", "message"), CASES, ids=[f"{c[1]}-{c[0]}" for c in CASES]
)
def test_the_check_fails_on_the_broken_driver(
    pytester: pytest.Pytester, require_kernel: None, driver: str, check: str, message: str
) -> None:
    pytester.makeconftest('pytest_plugins = ["nyx_core.testing"]\n')
    pytester.makepyfile(test_broken=INNER.format(driver=driver))
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", f"test_broken.py::TestBroken::{check}"
    )
    out = result.stdout.str()
    assert result.parseoutcomes().get("failed") == 1, out
    assert message in out, out


def test_every_check_has_a_broken_example() -> None:
    checks = {name for name in dir(BackendConformance) if name.startswith("test_")}
    assert checks == {c[1] for c in CASES}
