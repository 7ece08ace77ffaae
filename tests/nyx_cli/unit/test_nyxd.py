"""``nyxd`` flags, settings errors and plugin selection (no root; exits before serving)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nyx_cli._argv import normalize_argv
from nyx_cli.daemon._serve import sd_notify, should_start_dns
from nyx_core import NyxSettings

NYXD = [sys.executable, "-c", "from nyx_cli.daemon import main; main()"]


def nyxd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NYXD_")}
    return subprocess.run(
        [*NYXD, *args], capture_output=True, text=True, timeout=60, env={**clean, **(env or {})}
    )


def test_argv_single_dash_spellings() -> None:
    longs = ["net-driver", "dns", "cni-bin-dir"]
    assert normalize_argv(["-net-driver=cni", "-dns", "off", "-x", "--", "-dns"], longs) == [
        "--net-driver=cni",
        "--dns",
        "off",
        "-x",
        "--",
        "-dns",
    ]
    assert normalize_argv(["-h", "-cni-bin-dir", "/x", "-unknown"], longs) == [
        "-h",
        "--cni-bin-dir",
        "/x",
        "-unknown",
    ]


def test_unknown_driver_is_one_line_listing_installed() -> None:
    r = nyxd("--net-driver=bogus")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "'bogus'" in lines[0] and "native" in lines[0] and "installed:" in lines[0]


def test_single_dash_driver_flag() -> None:
    r = nyxd("-net-driver=bogus")
    assert r.returncode == 2 and "'bogus'" in r.stderr


def test_bad_setting_names_field_env_and_value() -> None:
    r = nyxd("--container-subnet", "10.0.0.0/33")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1
    assert "container_subnet (NYXD_CONTAINER_SUBNET)='10.0.0.0/33'" in r.stderr
    r = nyxd(env={"NYXD_GATEWAY_IP": "10.1.0.1"})
    assert r.returncode == 2 and "gateway_ip" in r.stderr and "not inside" in r.stderr


def test_help_documents_every_setting_with_its_env_var() -> None:
    r = nyxd("--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for name in NyxSettings.model_fields:
        flag = {"driver_opts": "--driver-opt"}.get(name, "--" + name.replace("_", "-"))
        assert flag in text, name
        assert f"env NYXD_{name.upper()}" in text, name
    assert "--list-plugins" in text


def test_list_plugins() -> None:
    r = nyxd("--list-plugins")
    assert r.returncode == 0
    assert "nyx.net_drivers" in r.stdout and "native" in r.stdout


def test_dns_start_policy() -> None:
    fake = object()
    assert should_start_dns(NyxSettings(), fake) is True  # type: ignore[arg-type]
    assert should_start_dns(NyxSettings(dns="off"), fake) is False  # type: ignore[arg-type]
    assert should_start_dns(NyxSettings(dns="cni"), fake) is False  # type: ignore[arg-type]
    assert should_start_dns(NyxSettings(), None) is False


def test_sd_notify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert sd_notify("READY=1") is True
        assert s.recv(100) == b"READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert sd_notify("READY=1") is False


# ------------------------------------------------------------ plugins' own settings


def test_help_shows_the_selected_plugins_settings() -> None:
    native = " ".join(nyxd("--help").stdout.split())
    assert "--bridge, --native-bridge TEXT name of the default network's bridge" in native
    assert "env NYXD_NATIVE_BRIDGE / NYXD_BRIDGE" in native
    assert "--embedded-ttl" in native and "env NYXD_EMBEDDED_TTL" in native  # DNS provider
    assert "--cni-bin-dir" not in native
    cni = " ".join(nyxd("-net-driver=cni", "--help").stdout.split())
    assert "--cni-bin-dir TEXT directory with the CNI plugin executables" in cni
    assert "env NYXD_CNI_BIN_DIR" in cni and "--cni-conf-dir" in cni and "--bridge" in cni
    assert "--native-bridge" not in cni
    # the driver can come from the environment too
    env = " ".join(nyxd("--help", env={"NYXD_NET_DRIVER": "cni"}).stdout.split())
    assert "--cni-conf-dir" in env


def test_plugin_flags_reach_the_plugin_settings_and_beat_the_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from nyx_cli.daemon import parse
    from nyx_core import load_settings
    from nyx_plugins_cni import CniSettings
    from nyx_plugins_native import NativeSettings

    monkeypatch.setenv("NYXD_BRIDGE", "from-env")
    core, plugins = parse(["--bridge", "br9", "--dns-port", "5300"])
    assert core["dns_port"] == 5300
    by_cls = dict(plugins)
    assert by_cls[NativeSettings]["bridge"] == "br9"
    assert load_settings(NativeSettings, **by_cls[NativeSettings]).bridge == "br9"
    _, plugins = parse([])
    assert load_settings(NativeSettings, **dict(plugins)[NativeSettings]).bridge == "from-env"
    _, plugins = parse(["-net-driver=cni", "-cni-bin-dir=/x/bin", "-cni-conf-dir", "/x/conf"])
    cni = load_settings(CniSettings, **dict(plugins)[CniSettings])
    assert (str(cni.bin_dir), str(cni.conf_dir), cni.bridge) == ("/x/bin", "/x/conf", "from-env")


def test_bad_plugin_setting_names_its_env_var() -> None:
    r = nyxd("--bridge", "bad name!")
    assert r.returncode == 2
    assert "bridge (NYXD_NATIVE_BRIDGE)='bad name!'" in r.stderr and r.stderr.count("\n") == 1
    r = nyxd("--net-driver", "cni", "--cni-timeout", "0")
    assert r.returncode == 2 and "timeout (NYXD_CNI_TIMEOUT)=0.0" in r.stderr


def test_the_plugin_reads_what_nyxd_built(tmp_path: Path) -> None:
    """settings.plugin(Cls) gives the plugin the object nyxd built from its flags."""
    from nyx_plugins_native import NativeSettings

    s = NyxSettings(state_dir=tmp_path).with_plugins(NativeSettings(bridge="br7"))
    assert s.plugin(NativeSettings).bridge == "br7"
    assert NyxSettings().plugin(NativeSettings).bridge == "nyx0"  # none given: env/default
