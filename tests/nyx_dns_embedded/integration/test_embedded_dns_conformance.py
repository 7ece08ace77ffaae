"""The embedded DNS provider passes the nyx_core.testing DNS provider conformance suite."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from nyx_core import PluginSettings
from nyx_core.testing import DnsProviderConformance, UpstreamConfig
from nyx_dns_embedded import EmbeddedDnsSettings


class TestEmbeddedDnsConformance(DnsProviderConformance):
    @pytest.fixture
    def nyx_dns_provider_name(self) -> str:
        return "embedded"

    @pytest.fixture
    def nyx_dns_ipv6(self) -> bool:
        return True

    @pytest.fixture
    def nyx_dns_upstream(self, tmp_path: Path) -> UpstreamConfig:
        def configure(ip: str, port: int) -> Sequence[PluginSettings]:
            conf = tmp_path / "upstream-resolv.conf"
            conf.write_text(f"nameserver {ip}\n")
            return [
                EmbeddedDnsSettings(
                    upstream_resolv_conf=conf, upstream_port=port, forward_timeout=1.0
                )
            ]

        return configure
