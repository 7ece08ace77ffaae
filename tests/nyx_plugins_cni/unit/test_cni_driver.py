"""The driver over fake plugins: chaining, runtimeConfig, rollback, cache, DEL, GC, CHECK."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nyx_core import (
    BackendError,
    CniPluginError,
    ConfigError,
    NetworkBackend,
    NyxSettings,
    PortConflictError,
    PortMapping,
    TeardownError,
)
from nyx_plugins_cni import CniDriver, CniSettings, ResultCache

Make = Callable[..., CniDriver]


@pytest.fixture
def make_driver(fake_bin: Any, tmp_path: Path) -> Make:
    """Factory: write a conflist of fake plugins and build a driver (no priming)."""

    def make(
        plugins: list[dict[str, Any]] | None = None,
        *,
        version: str = "1.0.0",
        extra: dict[str, Any] | None = None,
        loopback: bool = False,
        ensure: bool = True,
        timeout: float = 10,
    ) -> CniDriver:
        conf_dir = tmp_path / "net.d"
        conf_dir.mkdir(exist_ok=True)
        if plugins is not None:
            obj = {"cniVersion": version, "name": "nyx", "plugins": plugins, **(extra or {})}
            (conf_dir / "nyx.conflist").write_text(json.dumps(obj))
        s = NyxSettings(
            state_dir=tmp_path / "state",
            run_dir=tmp_path / "run",
            container_subnet="10.231.0.0/24",
            gateway_ip="10.231.0.1",
        )
        opts = CniSettings(
            bin_dir=fake_bin.dir,
            conf_dir=conf_dir,
            prime=False,
            loopback=loopback,
            timeout=timeout,
        )
        d = CniDriver(s, opts)
        if ensure:
            d.ensure_network()
        return d

    return make


@pytest.fixture
def netns(tmp_path: Path) -> str:
    """Fake plugins do not enter it: any existing path will do."""
    p = tmp_path / "netns-ctr"
    p.touch()
    return str(p)


def _three(fake_bin: Any) -> list[dict[str, Any]]:
    fake_bin.make("iface", iface=True)
    fake_bin.make("tune")
    fake_bin.make("ports")
    return [
        {"type": "iface", "ipam": {}},
        {"type": "tune", "capabilities": {"mac": True, "bandwidth": False}, "sysctl": {"a": "1"}},
        {"type": "ports", "capabilities": {"portMappings": True, "ipRanges": True}},
    ]


def test_add_runs_the_chain_in_order_with_prev_result(
    make_driver: Make, fake_bin: Any, netns: str
) -> None:
    d = make_driver(_three(fake_bin))
    fake_bin.clear()
    r = d.setup("c1", netns, [PortMapping.parse("127.0.0.1:8080-8081:80-81/udp")])
    assert fake_bin.sequence() == [("iface", "ADD"), ("tune", "ADD"), ("ports", "ADD")]
    first, second, third = fake_bin.calls("ADD")
    assert "prevResult" not in first["conf"]
    assert second["conf"]["prevResult"]["ips"][0]["address"] == "10.231.0.5/24"
    assert third["conf"]["prevResult"] == second["conf"]["prevResult"]
    for call in (first, second, third):
        assert call["conf"]["name"] == "nyx" and call["conf"]["cniVersion"] == "1.0.0"
        assert "capabilities" not in call["conf"]
        assert call["env"]["CNI_IFNAME"] == "eth0" and call["env"]["CNI_NETNS"] == netns
        assert call["env"]["CNI_ARGS"] == "IgnoreUnknown=1;K8S_POD_NAME=c1"
    assert second["conf"]["sysctl"] == {"a": "1"}  # other fields pass through
    assert "runtimeConfig" not in second["conf"]  # mac/bandwidth not provided
    assert third["conf"]["runtimeConfig"] == {
        "portMappings": [
            {"hostPort": 8080, "containerPort": 80, "protocol": "udp", "hostIP": "127.0.0.1"},
            {"hostPort": 8081, "containerPort": 81, "protocol": "udp", "hostIP": "127.0.0.1"},
        ]
    }
    # the result, converted
    assert r.container_id == "c1" and r.network == "nyx"
    assert [(i.name, i.mac) for i in r.interfaces] == [("eth0", "02:00:00:00:00:02")]
    assert [str(a) for a in r.interfaces[0].addresses] == ["10.231.0.5/24"]
    assert str(r.gateway) == "10.231.0.1" and str(r.dns_server) == "10.231.0.1"
    assert r.dns_search == ["nyxd.local"]
    assert r.extra["cni"]["result"]["cniVersion"] == "1.0.0"


def test_capability_args_go_only_to_plugins_declaring_them(
    make_driver: Make, fake_bin: Any, netns: str
) -> None:
    d = make_driver(_three(fake_bin))
    fake_bin.clear()
    ranges = [[{"subnet": "10.231.0.0/24", "rangeStart": "10.231.0.50"}]]
    d.setup(
        "c1",
        netns,
        capability_args={
            "mac": "c2:11:22:33:44:55",
            "bandwidth": {"ingressRate": 1},
            "ipRanges": ranges,
        },
    )
    _, tune, ports = fake_bin.calls("ADD")
    assert tune["conf"]["runtimeConfig"] == {"mac": "c2:11:22:33:44:55"}  # bandwidth: false
    assert ports["conf"]["runtimeConfig"] == {"ipRanges": ranges}


def test_loopback_attachment_comes_first_and_goes_last(
    make_driver: Make, fake_bin: Any, netns: str
) -> None:
    fake_bin.make("loopback")
    d = make_driver(_three(fake_bin), loopback=True)
    fake_bin.clear()
    d.setup("c1", netns)
    lo = fake_bin.calls("ADD")[0]
    assert lo["plugin"] == "loopback" and lo["env"]["CNI_IFNAME"] == "lo"
    assert lo["conf"]["name"] == "cni-loopback"
    fake_bin.clear()
    d.teardown("c1", netns)
    assert fake_bin.sequence() == [
        ("ports", "DEL"),
        ("tune", "DEL"),
        ("iface", "DEL"),
        ("loopback", "DEL"),
    ]


def test_del_runs_in_reverse_with_the_cached_result_and_is_idempotent(
    make_driver: Make, fake_bin: Any, netns: str
) -> None:
    d = make_driver(_three(fake_bin))
    d.setup("c1", netns, [PortMapping.parse("8080:80")])
    cache = ResultCache(d.settings.state_dir)
    assert cache.path("nyx", "c1", "eth0").exists()
    fake_bin.clear()
    d.teardown("c1", netns)
    assert fake_bin.sequence() == [("ports", "DEL"), ("tune", "DEL"), ("iface", "DEL")]
    for call in fake_bin.calls("DEL"):
        assert call["conf"]["prevResult"]["ips"][0]["address"] == "10.231.0.5/24"
    assert fake_bin.calls("DEL")[0]["conf"]["runtimeConfig"]["portMappings"][0]["hostPort"] == 8080
    assert not cache.path("nyx", "c1", "eth0").exists()
    fake_bin.clear()
    d.teardown("c1", netns)  # twice
    d.teardown("never", netns)  # never set up
    assert fake_bin.sequence() == []


def test_del_after_restart_uses_the_cache(make_driver: Make, fake_bin: Any, netns: str) -> None:
    d = make_driver(_three(fake_bin))
    d.setup("c1", netns)
    # the admin edits the conflist; DEL must still use what ADD used
    fake_bin.make("other")
    (d.options.conf_dir / "nyx.conflist").write_text(
        json.dumps({"cniVersion": "1.0.0", "name": "nyx", "plugins": [{"type": "other"}]})
    )
    restarted = make_driver()
    fake_bin.clear()
    restarted.teardown("c1", netns)
    assert fake_bin.sequence() == [("ports", "DEL"), ("tune", "DEL"), ("iface", "DEL")]
    assert all("prevResult" in c["conf"] for c in fake_bin.calls("DEL"))
    assert {c["env"]["CNI_ARGS"] for c in fake_bin.calls("DEL")} == {
        "IgnoreUnknown=1;K8S_POD_NAME=c1"
    }


def test_del_after_restart_without_netns_passes_empty_netns(
    make_driver: Make, fake_bin: Any, netns: str
) -> None:
    d = make_driver(_three(fake_bin))
    d.setup("c1", netns)
    Path(netns).unlink()
    restarted = make_driver()
    fake_bin.clear()
    restarted.teardown("c1", netns)
    assert {c["env"]["CNI_NETNS"] for c in fake_bin.calls("DEL")} == {""}


@pytest.mark.parametrize("mode", ["error", "garbage", "crash", "exit", "hang"])
def test_failure_in_the_middle_rolls_back_what_was_added(
    make_driver: Make, fake_bin: Any, netns: str, mode: str
) -> None:
    plugins = _three(fake_bin)
    fake_bin.make("broken", mode=mode)
    plugins.insert(2, {"type": "broken"})
    d = make_driver(plugins, timeout=1)
    fake_bin.clear()
    with pytest.raises(CniPluginError) as info:
        d.setup("c1", netns, [PortMapping.parse("8080:80")])
    assert info.value.plugin == "broken"
    assert fake_bin.sequence() == [
        ("iface", "ADD"),
        ("tune", "ADD"),
        ("broken", "ADD"),
        ("broken", "DEL"),
        ("tune", "DEL"),
        ("iface", "DEL"),
    ]
    assert ResultCache(d.settings.state_dir).entries() == []
    # nothing reserved: the same id and port work once the plugin is fixed
    fake_bin.make("broken")
    d.setup("c1", netns, [PortMapping.parse("8080:80")])


def test_rollback_failure_is_reported_and_keeps_the_cache_entry(
    make_driver: Make, fake_bin: Any, netns: str
) -> None:
    fake_bin.make("iface", iface=True, mode="error", fail_on=["DEL"])
    fake_bin.make("broken", mode="error")
    d = make_driver([{"type": "iface"}, {"type": "broken"}])
    with pytest.raises(CniPluginError) as info:
        d.setup("c1", netns)
    assert info.value.plugin == "broken"
    assert any("rollback" in n and "'iface'" in n for n in info.value.__notes__)
    (entry,) = ResultCache(d.settings.state_dir).entries()
    assert entry.container_id == "c1" and entry.result is not None  # GC will retry it


def test_teardown_goes_on_after_a_failing_plugin(
    make_driver: Make, fake_bin: Any, netns: str
) -> None:
    plugins = _three(fake_bin)
    d = make_driver(plugins)
    d.setup("c1", netns)
    fake_bin.make("tune", mode="error", fail_on=["DEL"])
    fake_bin.clear()
    with pytest.raises(TeardownError) as info:
        d.teardown("c1", netns)
    assert fake_bin.sequence() == [("ports", "DEL"), ("tune", "DEL"), ("iface", "DEL")]
    assert len(info.value.errors) == 1 and "'tune'" in str(info.value)
    assert ResultCache(d.settings.state_dir).path("nyx", "c1", "eth0").exists()
    fake_bin.make("tune")
    d.teardown("c1", netns)  # a retry finishes the job
    assert ResultCache(d.settings.state_dir).entries() == []


def test_add_without_result_is_an_error(make_driver: Make, fake_bin: Any, netns: str) -> None:
    fake_bin.make("quiet", mode="silent")
    (fake_bin.dir / "quiet").write_text(
        '#!/bin/sh\ncase $CNI_COMMAND in VERSION) echo \'{"supportedVersions":["1.0.0"]}\';; esac\n'
    )
    d = make_driver([{"type": "quiet"}])
    with pytest.raises(CniPluginError, match="ADD: printed no result"):
        d.setup("c1", netns)


def test_port_conflict_is_refused_before_any_plugin_runs(
    make_driver: Make, fake_bin: Any, netns: str
) -> None:
    d = make_driver(_three(fake_bin))
    d.setup("c1", netns, [PortMapping.parse("8080:80")])
    fake_bin.clear()
    with pytest.raises(PortConflictError, match=r"host port 127.0.0.1:8080/tcp .*'c2'.*'c1'"):
        d.setup("c2", netns, [PortMapping.parse("127.0.0.1:8079-8081:79-81")])
    assert fake_bin.sequence() == []
    d.setup("c2", netns, [PortMapping.parse("8080:80/udp")])  # other protocol is fine
    with pytest.raises(PortConflictError):
        make_driver().setup("c3", netns, [PortMapping.parse("8080:80")])  # restart: from cache


def test_setup_twice_and_bad_input_are_errors(make_driver: Make, fake_bin: Any, netns: str) -> None:
    d = make_driver(_three(fake_bin))
    d.setup("c1", netns)
    with pytest.raises(BackendError, match="'c1' is already set up"):
        d.setup("c1", netns)
    with pytest.raises(ConfigError, match=r"container_id '-x'"):
        d.setup("-x", netns)
    with pytest.raises(ConfigError, match=r"netns_path '/nonexistent/ns'"):
        d.setup("c2", "/nonexistent/ns")


def test_calls_before_ensure_network_are_errors(make_driver: Make, netns: str) -> None:
    d = make_driver(ensure=False)
    with pytest.raises(BackendError, match="ensure_network was not called"):
        d.setup("c1", netns)


def test_version_negotiation_picks_the_highest_common_version(
    make_driver: Make, fake_bin: Any
) -> None:
    fake_bin.make("new", versions=["0.4.0", "1.0.0", "1.1.0"])
    fake_bin.make("old", versions=["0.3.1", "0.4.0"])
    d = make_driver(
        [{"type": "new"}, {"type": "old"}],
        version="1.1.0",
        extra={"cniVersions": ["0.4.0", "1.0.0", "1.1.0"]},
    )
    assert d.version == "0.4.0"
    d2 = make_driver([{"type": "new"}], version="1.1.0", extra={"cniVersions": ["1.0.0"]})
    assert d2.version == "1.1.0"


def test_no_common_version_names_file_field_and_plugins(make_driver: Make, fake_bin: Any) -> None:
    fake_bin.make("old", versions=["0.3.1", "0.4.0"])
    with pytest.raises(ConfigError) as info:
        make_driver([{"type": "old"}], version="1.0.0")
    msg = str(info.value)
    assert "nyx.conflist: cniVersion" in msg and "old supports 0.3.1, 0.4.0" in msg


def test_unsupported_config_version_is_refused(make_driver: Make, fake_bin: Any) -> None:
    fake_bin.make("p")
    with pytest.raises(ConfigError, match=r"cniVersion '0.2.0' .* is not supported"):
        make_driver([{"type": "p"}], version="0.2.0")


def test_prev_result_is_not_sent_on_del_before_0_4_0(
    make_driver: Make, fake_bin: Any, netns: str
) -> None:
    d = make_driver(_three(fake_bin), version="0.3.1")
    d.setup("c1", netns)
    fake_bin.clear()
    d.teardown("c1", netns)
    assert all("prevResult" not in c["conf"] for c in fake_bin.calls("DEL"))


def test_gc_deletes_stale_attachments_and_sends_gc_to_1_1_plugins(
    make_driver: Make, fake_bin: Any, netns: str
) -> None:
    fake_bin.make("modern", iface=True, versions=["1.0.0", "1.1.0"])
    fake_bin.make("legacy", versions=["1.0.0"])
    d = make_driver(
        [{"type": "modern"}, {"type": "legacy"}],
        version="1.1.0",
        extra={"cniVersions": ["1.0.0", "1.1.0"]},
    )
    assert d.version == "1.0.0"
    d.setup("keep", netns)
    d.setup("stale", netns)
    restarted = make_driver()
    fake_bin.clear()
    report = restarted.gc(["keep"])
    assert report.removed == ["stale"] and report.gc_plugins == ["modern"]
    assert fake_bin.sequence() == [("legacy", "DEL"), ("modern", "DEL"), ("modern", "GC")]
    assert {c["env"]["CNI_CONTAINERID"] for c in fake_bin.calls("DEL")} == {"stale"}
    (gc,) = fake_bin.calls("GC")
    assert gc["conf"]["cni.dev/valid-attachments"] == [{"containerID": "keep", "ifname": "eth0"}]
    assert gc["conf"]["cniVersion"] == "1.1.0"
    assert [e.container_id for e in ResultCache(d.settings.state_dir).entries()] == ["keep"]


def test_gc_removes_half_added_attachments(make_driver: Make, fake_bin: Any, netns: str) -> None:
    d = make_driver(_three(fake_bin))
    d.setup("crashed", netns)
    cache = ResultCache(d.settings.state_dir)
    entry = cache.get("nyx", "crashed", "eth0")
    assert entry is not None
    entry.result = None  # as if nyxd died between the first ADD and the end
    cache.put(entry)
    restarted = make_driver()
    fake_bin.clear()
    assert restarted.gc([]).removed == ["crashed"]
    assert fake_bin.sequence() == [("ports", "DEL"), ("tune", "DEL"), ("iface", "DEL")]
    assert all("prevResult" not in c["conf"] for c in fake_bin.calls("DEL"))


def test_gc_respects_disable_gc(make_driver: Make, fake_bin: Any, netns: str) -> None:
    d = make_driver(_three(fake_bin), extra={"disableGC": True})
    d.setup("stale", netns)
    fake_bin.clear()
    assert d.gc([]).removed == []
    assert fake_bin.sequence() == []


def test_gc_collects_errors(make_driver: Make, fake_bin: Any, netns: str) -> None:
    d = make_driver(_three(fake_bin))
    d.setup("a", netns)
    d.setup("b", netns)
    fake_bin.make("tune", mode="error", fail_on=["DEL"])
    with pytest.raises(TeardownError) as info:
        d.gc([])
    assert len(info.value.errors) == 2  # both stale attachments were tried


def test_check_sends_the_cached_result(make_driver: Make, fake_bin: Any, netns: str) -> None:
    d = make_driver(_three(fake_bin))
    d.setup("c1", netns)
    fake_bin.clear()
    d.check("c1")
    assert fake_bin.sequence() == [("iface", "CHECK"), ("tune", "CHECK"), ("ports", "CHECK")]
    assert all(c["conf"]["prevResult"]["ips"] for c in fake_bin.calls("CHECK"))
    fake_bin.make("tune", mode="error", fail_on=["CHECK"])
    with pytest.raises(CniPluginError, match="'tune'.*CHECK"):
        d.check("c1")
    with pytest.raises(BackendError, match="not set up"):
        d.check("nope")


def test_check_respects_disable_check(make_driver: Make, fake_bin: Any, netns: str) -> None:
    d = make_driver(_three(fake_bin), extra={"disableCheck": True})
    d.setup("c1", netns)
    fake_bin.clear()
    d.check("c1")
    assert fake_bin.sequence() == []


def test_status_only_for_1_1_plugins(make_driver: Make, fake_bin: Any) -> None:
    fake_bin.make("modern", versions=["1.0.0", "1.1.0"])
    fake_bin.make("legacy", versions=["1.0.0"])
    d = make_driver([{"type": "modern"}, {"type": "legacy"}])
    assert d.status() == {"modern": "ok", "legacy": "no STATUS (spec < 1.1.0)"}
    fake_bin.make("modern", mode="unavailable", fail_on=["STATUS"], versions=["1.0.0", "1.1.0"])
    with pytest.raises(CniPluginError) as info:
        d.status()
    assert info.value.code == 50 and info.value.plugin == "modern"


def test_hooks_through_the_facade(
    fake_bin: Any, tmp_path: Path, netns: str, fake_nft: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NYXD_CNI_PRIME", "false")
    monkeypatch.setenv("NYXD_CNI_LOOPBACK", "false")
    for name in ("bridge", "host-local", "portmap"):
        fake_bin.make(name, iface=name == "bridge")
    s = NyxSettings(
        state_dir=tmp_path / "state",
        run_dir=tmp_path / "run",
        container_subnet="10.231.0.0/24",
        gateway_ip="10.231.0.1",
    ).with_plugins(CniSettings(bin_dir=fake_bin.dir, conf_dir=tmp_path / "net.d"))
    backend = NetworkBackend.load("cni")
    info = backend.ensure_network(s)
    assert isinstance(info, dict) and info["written"] == str(tmp_path / "net.d" / "nyx.conflist")
    r = backend.setup("c1", netns, [PortMapping.parse("8080:80")], opts=_opts())
    assert [str(ip) for ip in r.ips] == ["10.231.0.5"]
    assert r.internal and len(fake_nft.rules) == 1  # internal: a rule of its own
    backend.teardown("c1", netns)
    assert ResultCache(s.state_dir).entries() == []
    assert not fake_nft.table


def _opts() -> Any:
    from nyx_core import SetupOptions

    return SetupOptions(internal=True, static_ip="10.231.0.99", hostname="x")  # ip: ignored


def test_cni_driver_never_imports_pyroute2() -> None:
    code = (
        "import sys, nyx_core; "
        "nyx_core.NetworkBackend.load('cni'); "
        "assert 'pyroute2' not in sys.modules, 'pyroute2 imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_ports_need_a_plugin_with_the_port_mappings_capability(
    make_driver: Make, fake_bin: Any, netns: str
) -> None:
    fake_bin.make("iface", iface=True)
    d = make_driver([{"type": "iface"}])
    fake_bin.clear()
    with pytest.raises(ConfigError, match=r"ports \['8080:80/tcp'\]: no plugin .*portMappings"):
        d.setup("c1", netns, [PortMapping.parse("8080:80")])
    assert fake_bin.sequence() == []
    d.setup("c1", netns)  # without ports it is fine


def test_gc_deletes_the_network_before_the_loopback_attachment(
    make_driver: Make, fake_bin: Any, netns: str
) -> None:
    fake_bin.make("loopback")
    make_driver(_three(fake_bin), loopback=True).setup("stale", netns)
    restarted = make_driver(loopback=True)
    fake_bin.clear()
    assert restarted.gc([]).removed == ["stale"]
    assert fake_bin.sequence() == [
        ("ports", "DEL"),
        ("tune", "DEL"),
        ("iface", "DEL"),
        ("loopback", "DEL"),
    ]


def test_an_unusable_result_is_rolled_back(make_driver: Make, fake_bin: Any, netns: str) -> None:
    fake_bin.make("iface", iface=True, address="not-an-address")
    d = make_driver([{"type": "iface"}])
    fake_bin.clear()
    with pytest.raises(BackendError, match=r"ips\[0\]\.address 'not-an-address'"):
        d.setup("c1", netns)
    assert fake_bin.sequence() == [("iface", "ADD"), ("iface", "DEL")]
    assert ResultCache(d.settings.state_dir).entries() == []
    assert d.attached() == []


def test_an_unwritable_cache_fails_before_any_plugin_runs(
    make_driver: Make, fake_bin: Any, netns: str
) -> None:
    d = make_driver(_three(fake_bin))
    (d.settings.state_dir / "cni").mkdir(parents=True, exist_ok=True)
    (d.settings.state_dir / "cni" / "results").write_text("a file, not a directory")
    fake_bin.clear()
    with pytest.raises(BackendError, match=r"CNI result cache .*cannot write"):
        d.setup("c1", netns)
    assert fake_bin.sequence() == []
    assert d.attached() == []


def test_ensure_network_reports_status_without_failing(make_driver: Make, fake_bin: Any) -> None:
    fake_bin.make("modern", mode="unavailable", fail_on=["STATUS"], versions=["1.0.0", "1.1.0"])
    d = make_driver([{"type": "modern"}], ensure=False)
    info = d.ensure_network()
    assert info["status"]["modern"].startswith("error: CNI plugin 'modern' failed (code 50)")
    assert info["cniVersion"] == "1.0.0" and info["plugins"] == ["modern"]
