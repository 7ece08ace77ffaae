"""The CNI driver's own settings (env ``NYXD_CNI_*``; nyxd adds their flags)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from nyx_core import PluginSettings, plugin_settings_config

from ._exec import DEFAULT_TIMEOUT

__all__ = ["CniSettings"]


class CniSettings(PluginSettings):
    """The CNI driver's own settings (env ``NYXD_CNI_*``; nyxd adds their flags).

    ``--cni-bin-dir``, ``--cni-conf-dir`` and ``--bridge`` are the spec's flags.
    """

    model_config = SettingsConfigDict(**plugin_settings_config("cni"), populate_by_name=True)

    bin_dir: Path = Field(
        default=Path("/opt/cni/bin"), description="directory with the CNI plugin executables"
    )
    conf_dir: Path = Field(
        default=Path("/etc/cni/net.d"), description="directory with CNI network configurations"
    )
    bridge: str = Field(
        default="nyx0",
        pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,14}$",
        description="bridge of the default conflist nyx writes when none exists",
        validation_alias=AliasChoices("NYXD_CNI_BRIDGE", "NYXD_BRIDGE"),
        json_schema_extra={"flags": ["--bridge", "--cni-bridge"]},
    )

    timeout: float = Field(
        default=DEFAULT_TIMEOUT, gt=0, description="seconds one plugin execution may take"
    )
    loopback: bool = Field(
        default=True, description="bring up the container's lo with the loopback plugin"
    )
    prime: bool = Field(
        default=True,
        description="at ensure_network, add and delete one scratch attachment so the bridge "
        "and the plugins' shared firewall chains exist before the first container",
    )
