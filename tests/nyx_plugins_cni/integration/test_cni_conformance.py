"""The CNI driver passes the nyx driver conformance suite (with Debian's plugins)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nyx_core.testing import BackendConformance


@pytest.mark.skipif(not Path("/usr/lib/cni/bridge").exists(), reason="needs CNI plugins")
class TestCniConformance(BackendConformance):
    @pytest.fixture
    def nyx_driver_name(self) -> str:
        return "cni"
