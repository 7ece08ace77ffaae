"""``nyxd`` flags, settings errors and plugin selection (no root; exits before serving)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nyx_cli._argv import normalize_argv
from nyx_core import NyxSettings
from nyx_core._daemon import sd_notify, should_start_dns

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
