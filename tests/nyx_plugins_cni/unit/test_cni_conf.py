"""Loading and validating network configurations; the default conflist."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from nyx_core import ConfigError, NyxSettings
from nyx_plugins_cni import CniDriver, CniSettings, default_conflist, find_network, parse_network


def _bin(tmp_path: Path, *names: str) -> Path:
    d = tmp_path / "bin"
    d.mkdir(exist_ok=True)
    for n in names:
        (d / n).write_text("#!/bin/sh\n")
        (d / n).chmod(0o755)
    return d


def _conflist(name: str = "nyx", *types: str) -> dict[str, object]:
    return {"cniVersion": "1.0.0", "name": name, "plugins": [{"type": t} for t in types]}


def test_conflist_is_found_by_name_not_file_name(tmp_path: Path) -> None:
    conf = tmp_path / "net.d"
    conf.mkdir()
    (conf / "10-other.conflist").write_text(json.dumps(_conflist("other", "bridge")))
    (conf / "20-mine.conflist").write_text(json.dumps(_conflist("nyx", "bridge", "portmap")))
    net = find_network(conf, "nyx", _bin(tmp_path, "bridge", "portmap"))
    assert net is not None
    assert [p["type"] for p in net.plugins] == ["bridge", "portmap"]
    assert net.source.endswith("20-mine.conflist")


def test_single_plugin_conf_becomes_a_one_plugin_list(tmp_path: Path) -> None:
    conf = tmp_path / "net.d"
    conf.mkdir()
    single = {"cniVersion": "0.4.0", "name": "nyx", "type": "bridge", "bridge": "br9"}
    (conf / "nyx.conf").write_text(json.dumps(single))
    net = find_network(conf, "nyx", _bin(tmp_path, "bridge"))
    assert net is not None
    assert net.plugins == [{"type": "bridge", "bridge": "br9"}]
    assert net.cni_version == "0.4.0"


def test_conflist_wins_over_conf(tmp_path: Path) -> None:
    conf = tmp_path / "net.d"
    conf.mkdir()
    (conf / "00-nyx.conf").write_text(
        json.dumps({"cniVersion": "1.0.0", "name": "nyx", "type": "bridge"})
    )
    (conf / "99-nyx.conflist").write_text(json.dumps(_conflist("nyx", "portmap")))
    net = find_network(conf, "nyx", _bin(tmp_path, "bridge", "portmap"))
    assert net is not None and net.plugins == [{"type": "portmap"}]


def test_missing_network_is_none(tmp_path: Path) -> None:
    assert find_network(tmp_path / "nope", "nyx") is None
    (tmp_path / "x.conflist").write_text(json.dumps(_conflist("other", "bridge")))
    assert find_network(tmp_path, "nyx") is None


def test_bad_json_names_file_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "nyx.conflist").write_text('{"name": "nyx",\n "plugins": [,]}')
    with pytest.raises(ConfigError, match=r"nyx\.conflist: not valid JSON: .* line 2 column"):
        find_network(tmp_path, "nyx")


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([1, 2], r"must be a JSON object"),
        ({"cniVersion": "1.0.0", "plugins": []}, r"name None must start"),
        ({"cniVersion": "1.0.0", "name": "-bad", "plugins": []}, r"name '-bad'"),
        ({"name": "n", "plugins": [{"type": "bridge"}]}, r"cniVersion must be a string"),
        ({"cniVersion": "1.0", "name": "n", "plugins": []}, r"cniVersion '1.0' is not a version"),
        ({"cniVersion": "1.0.0", "name": "n", "plugins": []}, r"plugins must be a non-empty"),
        ({"cniVersion": "1.0.0", "name": "n", "plugins": [{}]}, r"plugins\[0\]\.type must be"),
        (
            {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "bridge"}, {"type": "../x"}]},
            r"plugins\[1\]\.type '\.\./x' must be a plain file name",
        ),
        (
            {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "/usr/lib/cni/bridge"}]},
            r"plugins\[0\]\.type '/usr/lib/cni/bridge' must be a plain file name",
        ),
        (
            {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "nosuch"}]},
            r"plugins\[0\]\.type 'nosuch': no executable .*bin/nosuch",
        ),
        (
            {
                "cniVersion": "1.0.0",
                "name": "n",
                "plugins": [{"type": "bridge", "ipam": {"type": "dhcp/x"}}],
            },
            r"plugins\[0\]\.ipam\.type 'dhcp/x' must be a plain file name",
        ),
        (
            {
                "cniVersion": "1.0.0",
                "name": "n",
                "plugins": [{"type": "bridge", "capabilities": 1}],
            },
            r"plugins\[0\]\.capabilities must map",
        ),
        (
            {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "bridge", "prevResult": {}}]},
            r"plugins\[0\]\.prevResult is set by the runtime",
        ),
        (
            {"cniVersion": "1.0.0", "name": "n", "disableGC": "yes", "plugins": [{"type": "x"}]},
            r"disableGC must be true or false",
        ),
        (
            {"cniVersion": "1.0.0", "cniVersions": ["1.1"], "name": "n", "plugins": []},
            r"cniVersions\[0\] '1.1' is not a version",
        ),
        ({"cniVersion": "1.0.0", "name": "n"}, r"has neither plugins \(conflist\) nor type"),
    ],
)
def test_validation_errors_name_file_and_field(tmp_path: Path, obj: object, message: str) -> None:
    with pytest.raises(ConfigError, match=r"^/my/nyx\.conflist: " + message):
        parse_network(obj, "/my/nyx.conflist", _bin(tmp_path, "bridge"))


def _settings(tmp_path: Path, bin_dir: Path) -> NyxSettings:
    return NyxSettings(
        state_dir=tmp_path / "state",
        run_dir=tmp_path / "run",
        container_subnet="10.231.0.0/24",
        gateway_ip="10.231.0.1",
    ).with_plugins(_opts(tmp_path, bin_dir))


def _opts(tmp_path: Path, bin_dir: Path, **kw: Any) -> CniSettings:
    return CniSettings(bin_dir=bin_dir, conf_dir=tmp_path / "net.d", bridge="nyxt9", **kw)


def test_default_conflist_follows_the_settings(tmp_path: Path) -> None:
    s = _settings(tmp_path, tmp_path)
    obj = default_conflist(s, "nyxt9")
    bridge, portmap = obj["plugins"]
    assert obj["name"] == "nyx" and obj["cniVersion"] == "1.0.0"
    assert bridge["type"] == "bridge" and bridge["bridge"] == "nyxt9" and bridge["isGateway"]
    assert bridge["ipam"]["type"] == "host-local"
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.231.0.0/24", "gateway": "10.231.0.1"}]]
    assert bridge["ipam"]["dataDir"] == str(tmp_path / "state" / "cni" / "networks")
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}}


def test_default_conflist_is_dual_stack_when_ipv6_is_configured(tmp_path: Path) -> None:
    """Two host-local ranges (one address of each family), both default routes."""
    s = _settings(tmp_path, tmp_path).model_copy(
        update={"container_subnet6": ipaddress.IPv6Network("fd00:231::/64")}
    )
    ipam = default_conflist(s, "nyxt9")["plugins"][0]["ipam"]
    assert ipam["ranges"] == [
        [{"subnet": "10.231.0.0/24", "gateway": "10.231.0.1"}],
        [{"subnet": "fd00:231::/64", "gateway": "fd00:231::1"}],
    ]
    assert ipam["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    gw6 = s.model_copy(update={"gateway_ip6": ipaddress.IPv6Address("fd00:231::fe")})
    assert default_conflist(gw6, "nyxt9")["plugins"][0]["ipam"]["ranges"][1] == [
        {"subnet": "fd00:231::/64", "gateway": "fd00:231::fe"}
    ]


def test_default_conflist_follows_ipv6_settings_changes(tmp_path: Path) -> None:
    """nyx's own default conflist, written under other IPv6 settings, is rewritten (in
    place, under its own file name) when NYXD_CONTAINER_SUBNET6 is set, changed or unset;
    a conflist that is not nyx's template is left alone."""
    bin_dir = _bin(tmp_path, "bridge", "host-local", "portmap")
    opts = _opts(tmp_path, bin_dir, prime=False, loopback=False)
    v4 = _settings(tmp_path, bin_dir)
    dual = v4.model_copy(update={"container_subnet6": ipaddress.IPv6Network("fd00:231::/64")})
    other = v4.model_copy(update={"container_subnet6": ipaddress.IPv6Network("fd00:232::/64")})
    path = tmp_path / "net.d" / "nyx.conflist"
    CniDriver(v4, opts).load_network()
    for settings in (dual, other, v4):
        driver = CniDriver(settings, opts)
        net = driver.load_network()
        assert driver.written == path and net.source == str(path)
        assert json.loads(path.read_text()) == default_conflist(settings, "nyxt9")
        assert sorted(p.name for p in path.parent.iterdir()) == ["nyx.conflist"]
    renamed = path.with_name("10-nyx.conflist")  # the same template under another name
    path.rename(renamed)
    CniDriver(dual, opts).load_network()
    assert json.loads(renamed.read_text()) == default_conflist(dual, "nyxt9")
    assert not path.exists()
    edited = default_conflist(v4, "nyxt9")
    edited["plugins"][0]["mtu"] = 1400  # the admin's version: used as it is
    renamed.write_text(json.dumps(edited))
    driver = CniDriver(dual, opts)
    net = driver.load_network()
    assert driver.written is None and net.plugins[0]["mtu"] == 1400
    assert json.loads(renamed.read_text()) == edited


def test_default_is_written_once_and_not_overwritten(tmp_path: Path) -> None:
    bin_dir = _bin(tmp_path, "bridge", "host-local", "portmap")
    driver = CniDriver(
        _settings(tmp_path, bin_dir), _opts(tmp_path, bin_dir, prime=False, loopback=False)
    )
    net = driver.load_network()
    path = tmp_path / "net.d" / "nyx.conflist"
    assert driver.written == path and net.source == str(path)
    assert json.loads(path.read_text())["plugins"][0]["bridge"] == "nyxt9"
    path.write_text(json.dumps(_conflist("nyx", "portmap")))  # the admin's own version
    again = CniDriver(
        _settings(tmp_path, bin_dir), _opts(tmp_path, bin_dir, prime=False, loopback=False)
    )
    assert [p["type"] for p in again.load_network().plugins] == ["portmap"]
    assert again.written is None


def test_default_is_not_written_when_plugins_are_missing(tmp_path: Path) -> None:
    bin_dir = _bin(tmp_path, "bridge")  # no host-local, no portmap
    driver = CniDriver(_settings(tmp_path, bin_dir), _opts(tmp_path, bin_dir, prime=False))
    with pytest.raises(ConfigError, match=r"nyx\.conflist: plugins\[0\]\.ipam\.type 'host-local'"):
        driver.load_network()
    assert not (tmp_path / "net.d" / "nyx.conflist").exists()


def test_plugins_from_the_network_folder_are_appended(tmp_path: Path) -> None:
    conf = tmp_path / "net.d"
    (conf / "nyx").mkdir(parents=True)
    (conf / "nyx.conflist").write_text(json.dumps(_conflist("nyx", "bridge")))
    (conf / "nyx" / "20-b.conf").write_text(json.dumps({"type": "portmap"}))
    (conf / "nyx" / "10-a.conf").write_text(json.dumps({"type": "tuning", "mtu": 1400}))
    (conf / "nyx" / "notes.txt").write_text("ignored")
    bin_dir = _bin(tmp_path, "bridge", "portmap", "tuning")
    net = find_network(conf, "nyx", bin_dir)
    assert net is not None
    assert [p["type"] for p in net.plugins] == ["bridge", "tuning", "portmap"]
    # no inline plugins at all is fine too
    (conf / "nyx.conflist").write_text(json.dumps({"cniVersion": "1.1.0", "name": "nyx"}))
    net = find_network(conf, "nyx", bin_dir)
    assert net is not None and [p["type"] for p in net.plugins] == ["tuning", "portmap"]


def test_load_only_inlined_plugins_ignores_the_folder(tmp_path: Path) -> None:
    conf = tmp_path / "net.d"
    (conf / "nyx").mkdir(parents=True)
    obj = {**_conflist("nyx", "bridge"), "loadOnlyInlinedPlugins": True}
    (conf / "nyx.conflist").write_text(json.dumps(obj))
    (conf / "nyx" / "10-a.conf").write_text(json.dumps({"type": "tuning"}))
    net = find_network(conf, "nyx", _bin(tmp_path, "bridge", "tuning"))
    assert net is not None and [p["type"] for p in net.plugins] == ["bridge"]
    del obj["plugins"]
    (conf / "nyx.conflist").write_text(json.dumps(obj))
    with pytest.raises(ConfigError, match=r"loadOnlyInlinedPlugins is true but plugins is missing"):
        find_network(conf, "nyx", _bin(tmp_path, "bridge", "tuning"))


def test_a_bad_folder_plugin_names_its_own_file(tmp_path: Path) -> None:
    conf = tmp_path / "net.d"
    (conf / "nyx").mkdir(parents=True)
    (conf / "nyx.conflist").write_text(json.dumps(_conflist("nyx", "bridge")))
    (conf / "nyx" / "10-a.conf").write_text(json.dumps({"type": "../evil"}))
    with pytest.raises(ConfigError, match=r"nyx/10-a\.conf: type '\.\./evil' must be a plain"):
        find_network(conf, "nyx", _bin(tmp_path, "bridge"))
