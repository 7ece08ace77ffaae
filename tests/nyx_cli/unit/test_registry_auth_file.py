"""Where nyxd reads registry credentials (``registry_auth_file``) and ``nyx login`` writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from nyx_cli.daemon._settings import DaemonSettings
from nyx_core import load_settings


def test_default_is_docker_config_then_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("NYXD_REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert load_settings(DaemonSettings).registry_auth_file == (
        tmp_path / "home" / ".docker" / "config.json"
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dc"))
    assert load_settings(DaemonSettings).registry_auth_file == tmp_path / "dc" / "config.json"


def test_env_and_flag_choose_another(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NYXD_REGISTRY_AUTH_FILE", str(tmp_path / "env.json"))
    assert load_settings(DaemonSettings).registry_auth_file == tmp_path / "env.json"
    got = load_settings(DaemonSettings, registry_auth_file=tmp_path / "flag.json")
    assert got.registry_auth_file == tmp_path / "flag.json"
