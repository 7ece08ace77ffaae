from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from nyx_cli.daemon._settings import DaemonSettings
from nyx_core import ConfigError, load_settings

ENV = [
    "NYXD_NET_DRIVER",
    "NYXD_DNS",
    "NYXD_CNI_BIN_DIR",
    "NYXD_CNI_CONF_DIR",
    "NYXD_NETWORK",
    "NYXD_LOG_LEVEL",
    "NYXD_SOCKET",
    "NYXD_GATEWAY_IP",
    "NYXD_CONTAINER_SUBNET",
    "NYXD_STATE_DIR",
    "NYXD_RUN_DIR",
    "NYXD_IMAGE_LAYER_MAX_BYTES",
    "NYXD_IMAGE_MAX_BYTES",
    "NYXD_IMAGE_LAYER_MAX_ENTRIES",
    "NYXD_IMAGE_CONFIG_MAX_BYTES",
]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def test_defaults_match_the_spec() -> None:
    s = load_settings(DaemonSettings)
    assert s.net_driver == "native"
    assert s.dns == "auto"
    assert s.gateway_ip == ipaddress.IPv4Address("10.88.0.1")
    assert s.container_subnet == ipaddress.IPv4Network("10.88.0.0/16")
    assert s.network == "nyx"
    assert s.state_dir == Path("/var/lib/nyx")
    assert s.run_dir == Path("/run/nyx")
    assert s.socket == Path("/run/nyx/nyxd.sock")
    assert str(s.gateway_interface) == "10.88.0.1/16"


def test_every_documented_env_var_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NYXD_NET_DRIVER", "cni")
    monkeypatch.setenv("NYXD_DNS", "off")
    monkeypatch.setenv("NYXD_NETWORK", "other")
    monkeypatch.setenv("NYXD_LOG_LEVEL", "debug")
    monkeypatch.setenv("NYXD_SOCKET", "/x/s.sock")
    monkeypatch.setenv("NYXD_GATEWAY_IP", "10.99.0.254")
    monkeypatch.setenv("NYXD_CONTAINER_SUBNET", "10.99.0.0/24")
    monkeypatch.setenv("NYXD_STATE_DIR", "/x/state")
    monkeypatch.setenv("NYXD_RUN_DIR", "/x/run")
    s = load_settings(DaemonSettings)
    assert (s.net_driver, s.dns, s.network, s.log_level) == ("cni", "off", "other", "debug")
    assert (s.socket, s.state_dir, s.run_dir) == (
        Path("/x/s.sock"),
        Path("/x/state"),
        Path("/x/run"),
    )
    assert str(s.gateway_interface) == "10.99.0.254/24"


def test_flags_beat_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NYXD_NET_DRIVER", "cni")
    assert load_settings(DaemonSettings, net_driver="native").net_driver == "native"
    assert load_settings(DaemonSettings, net_driver=None).net_driver == "cni"


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        ({"dns": "sometimes"}, ["dns (NYXD_DNS)='sometimes'"]),
        ({"gateway_ip": "10.1.0.1"}, ["gateway_ip 10.1.0.1 is not inside container_subnet"]),
        ({"gateway_ip": "10.88.0.0"}, ["network or broadcast address"]),
        ({"container_subnet": "10.88.0.0/31", "gateway_ip": "10.88.0.1"}, ["too small"]),
        ({"container_subnet": "nope"}, ["container_subnet (NYXD_CONTAINER_SUBNET)='nope'"]),
        ({"log_level": "loud"}, ["log_level (NYXD_LOG_LEVEL)='loud'"]),
    ],
)
def test_bad_values_name_the_setting(overrides: dict[str, str], fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(DaemonSettings, **overrides)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_bad_env_value_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NYXD_GATEWAY_IP", "not-an-ip")
    with pytest.raises(ConfigError, match=r"gateway_ip \(NYXD_GATEWAY_IP\)='not-an-ip'"):
        load_settings(DaemonSettings)


def test_every_field_has_a_description() -> None:
    for name, field in DaemonSettings.model_fields.items():
        assert field.description, name


def test_image_caps_have_defaults_that_fit_real_images() -> None:
    s = load_settings(DaemonSettings)
    assert s.image_layer_max_bytes == 16 << 30  # CUDA / ML layers reach several GiB
    assert s.image_max_bytes == 64 << 30
    assert s.image_layer_max_entries == 1_000_000
    assert s.image_config_max_bytes == 4 << 20  # docker distribution's and podman's cap


def test_image_caps_from_env_flags_and_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NYXD_IMAGE_LAYER_MAX_BYTES", str(1 << 30))
    monkeypatch.setenv("NYXD_IMAGE_MAX_BYTES", str(2 << 30))
    monkeypatch.setenv("NYXD_IMAGE_LAYER_MAX_ENTRIES", "5000")
    monkeypatch.setenv("NYXD_IMAGE_CONFIG_MAX_BYTES", str(1 << 20))
    s = load_settings(DaemonSettings)
    assert (s.image_layer_max_bytes, s.image_max_bytes) == (1 << 30, 2 << 30)
    assert (s.image_layer_max_entries, s.image_config_max_bytes) == (5000, 1 << 20)
    assert load_settings(DaemonSettings, image_layer_max_entries=7).image_layer_max_entries == 7
    with pytest.raises(
        ConfigError, match=r"image_config_max_bytes \(NYXD_IMAGE_CONFIG_MAX_BYTES\)"
    ):
        load_settings(DaemonSettings, image_config_max_bytes=10)
