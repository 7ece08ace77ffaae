"""Test-only fault points (see :mod:`nyx_cli._faults`, re-exported here for the daemon)."""

from __future__ import annotations

from .._faults import FAULTS, POINTS, Faults, FaultsRefused, arm, checkpoint, from_environ

__all__ = ["FAULTS", "POINTS", "Faults", "FaultsRefused", "arm", "checkpoint", "from_environ"]
