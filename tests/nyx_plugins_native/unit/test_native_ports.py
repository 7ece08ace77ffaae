"""The native driver's port checks without root: intervals, the per-container limit and
the file descriptor budget of the reservations (issue 11 item 11)."""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Any

import pytest

from nyx_core import ConfigError, NyxSettings, PortConflictError, PortMapping, SetupOptions
from nyx_core import port_ranges as ranges_of
from nyx_plugins_native import _ports
from nyx_plugins_native._driver import NativeDriver
from nyx_plugins_native._firewall import port_elements


def test_published_ports_are_merged_into_intervals(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real = _ports.check_port_clash

    def spy(new: Any, taken: Any) -> None:
        seen.append(len(taken))
        real(new, taken)

    monkeypatch.setattr(_ports, "check_port_clash", spy)
    web = port_elements([PortMapping.parse("10000-19999:10000-19999")], "10.0.0.2")
    db = port_elements([PortMapping.parse("127.0.0.1:5432:5432")], "10.0.0.3")
    published = [("web", p) for p in web] + [("db", p) for p in db]
    _ports.check_conflicts(ranges_of([PortMapping.parse("20000-29999:1-10000")]), published)
    assert seen == [2]  # 10001 published ports, two intervals
    with pytest.raises(PortConflictError) as exc:
        _ports.check_conflicts(ranges_of([PortMapping.parse("6000-15000:6000-15000")]), published)
    assert str(exc.value) == "host port 10000/tcp is already published by container 'web'"
    with pytest.raises(PortConflictError, match="127.0.0.1:5432/tcp .*'db'"):
        _ports.check_conflicts(ranges_of([PortMapping.parse("5432:1")]), published)


def test_only_published_ports_inside_a_new_interval_are_looked_at() -> None:
    """What the driver hands :func:`check_conflicts` (``overlapping``): the ports of other
    containers inside one of the new intervals, same protocol; the verdict and the message
    are those of the whole list."""
    web = port_elements([PortMapping.parse("10000-19999:10000-19999")], "10.0.0.2")
    db = port_elements([PortMapping.parse("127.0.0.1:5432:5432")], "10.0.0.3")
    dns = port_elements([PortMapping.parse("5353:53/udp")], "10.0.0.4")
    published = [("web", p) for p in web] + [("db", p) for p in db] + [("dns", p) for p in dns]
    for spec in ("6000-15000:6000-15000", "5432:1", "5353:1", "5353:1/udp", "19999-20001:1-3"):
        new = ranges_of([PortMapping.parse(spec)])
        near = _ports.overlapping(new)
        few = [(o, p) for o, p in published if near(p.protocol, p.host_port)]
        errors = []
        for ports in (published, few):
            try:
                _ports.check_conflicts(new, ports)
                errors.append(None)
            except PortConflictError as exc:
                errors.append(str(exc))
        assert errors[0] == errors[1], spec
    near = _ports.overlapping(ranges_of([PortMapping.parse("19999-20001:1-3")]))
    assert [p.host_port for _o, p in published if near(p.protocol, p.host_port)] == [19999]
    two = _ports.overlapping(ranges_of([PortMapping.parse(s) for s in ("80:1", "9000-9001:1-2")]))
    assert (two.lo, two.hi) == (80, 9001)  # what a scan compares inline first
    assert two("tcp", 9001) and not two("tcp", 8080) and not two("udp", 80)


def test_setup_refuses_more_ports_than_the_setting_first(tmp_path: Path) -> None:
    driver = NativeDriver()
    driver._settings = NyxSettings(state_dir=tmp_path / "state", max_published_ports=100)
    with pytest.raises(ConfigError) as exc:
        driver.setup(
            "c1", str(tmp_path / "no-netns"), [PortMapping.parse("1-65535:1-65535")], SetupOptions()
        )
    assert "65535 host ports" in str(exc.value)
    assert "max_published_ports=100 (NYXD_MAX_PUBLISHED_PORTS)" in str(exc.value)
    assert not (tmp_path / "state").exists()


def test_reservations_keep_file_descriptors_free(monkeypatch: pytest.MonkeyPatch) -> None:
    used = len(list(Path("/proc/self/fd").iterdir()))
    soft = used + _ports.FD_HEADROOM + 10
    monkeypatch.setattr(resource, "getrlimit", lambda _what: (soft, soft * 4))
    _ports.check_fd_budget(5)
    with pytest.raises(PortConflictError) as exc:
        _ports.reserve(port_elements([PortMapping.parse("127.0.0.1:40000-40099:1-100")], "x"))
    assert "publishing 100 host ports needs 100 file descriptors" in str(exc.value)
    assert f"of its limit {soft} (RLIMIT_NOFILE)" in str(exc.value)


def test_the_budget_counts_descriptors_only_near_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counting open descriptors lists /proc/self/fd (O(open)): with a thousand published
    ports, a restart re-reserving each container's would pay it a thousand times. Far from
    the limit the descriptor table's size (FDSize) answers instead."""
    counted: list[int] = []
    real = _ports._open_fds

    def counting() -> int:
        counted.append(1)
        return real()

    monkeypatch.setattr(_ports, "_open_fds", counting)
    table = _ports._fd_table_size()
    assert table is not None and table >= len(list(Path("/proc/self/fd").iterdir()))
    monkeypatch.setattr(resource, "getrlimit", lambda _what: (table * 8 + 10_000, table * 8))
    _ports.check_fd_budget(100)
    assert counted == []
    near = table + _ports.FD_HEADROOM + 99  # the bound says maybe: count them
    monkeypatch.setattr(resource, "getrlimit", lambda _what: (near, table * 8))
    _ports.check_fd_budget(100)  # counted, and enough: fewer are open than the table holds
    assert counted == [1]
