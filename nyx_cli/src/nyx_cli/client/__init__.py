"""nyx: the client. One request to nyxd's control socket per command; nothing heavy is
imported before a command needs it (no pydantic, no nyx_core).

Entry point: ``nyx = nyx_cli.client:main``.
"""

from __future__ import annotations

from ._cli import cli, main

__all__ = ["cli", "main"]
