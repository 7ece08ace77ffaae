"""nyx-cli: the ``nyxd`` daemon and the ``nyx`` client."""

from __future__ import annotations

from loguru import logger

__version__ = "0.1.0"
logger.disable("nyx_cli")

__all__ = ["__version__"]
