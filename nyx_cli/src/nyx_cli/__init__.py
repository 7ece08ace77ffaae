"""nyx-cli: the ``nyxd`` daemon and the ``nyx`` client.

Nothing heavy is imported here: ``nyx`` must start fast (loguru, pydantic and nyx_core are
imported only by the daemon and by the commands that need them).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
