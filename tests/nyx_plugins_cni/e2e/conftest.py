"""nyxd e2e fixtures for the CNI driver: the shared kit in tests/e2e (``nyxd_e2e_kit``)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "e2e"))

from nyxd_e2e_kit import busybox_tar, nyxd_factory

__all__ = ["busybox_tar", "nyxd_factory"]
