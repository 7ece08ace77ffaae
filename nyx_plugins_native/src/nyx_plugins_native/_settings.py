"""The native driver's own settings (env ``NYXD_NATIVE_*``; nyxd adds their flags)."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from nyx_core import PluginSettings, plugin_settings_config

__all__ = ["NativeSettings"]


class NativeSettings(PluginSettings):
    """Settings of the native driver (``nyxd --bridge``...)."""

    model_config = SettingsConfigDict(**plugin_settings_config("native"), populate_by_name=True)

    bridge: str = Field(
        default="nyx0",
        pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,14}$",
        description="name of the default network's bridge",
        # NYXD_BRIDGE and --bridge: the spelling of nyx 0.1 and of the spec, kept working
        validation_alias=AliasChoices("NYXD_NATIVE_BRIDGE", "NYXD_BRIDGE"),
        json_schema_extra={"flags": ["--bridge", "--native-bridge"]},
    )
    watch: bool = Field(
        default=True,
        description=(
            "repair nyx's nftables tables and bridges when something else changes them "
            "(a firewall reload, nft flush ruleset, a deleted bridge)"
        ),
    )
