"""nyx: the client. One request to nyxd's control socket per command; nothing heavy is
imported before a command needs it (no pydantic, no nyx_core, and no click for the common
command lines: see ``_main``).

Entry point: ``nyx = nyx_cli.client:main``. ``cli`` (the click group) is imported on first
use.
"""

from __future__ import annotations

from ._main import main

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._cli import cli

__all__ = ["cli", "main"]


def __getattr__(name: str) -> object:
    if name == "cli":
        from ._cli import cli

        return cli
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
