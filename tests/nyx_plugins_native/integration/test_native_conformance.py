"""The native driver passes the nyx_core.testing conformance suite."""

from __future__ import annotations

import pytest

from nyx_core.testing import BackendConformance


class TestNativeConformance(BackendConformance):
    @pytest.fixture
    def nyx_driver_name(self) -> str:
        return "native"
