"""Compose stacks: ``compose.yaml`` planning (pure) and the ``nyx compose`` commands."""

from __future__ import annotations

__all__: list[str] = []
