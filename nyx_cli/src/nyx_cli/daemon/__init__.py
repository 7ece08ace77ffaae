"""nyxd: the daemon. Loads the driver and DNS provider its flags name, supervises
containers (runc) through a supervisor that holds a :class:`nyx_core.NetworkBackend`, and
serves the control socket API.

Entry point: ``nyxd = nyx_cli.daemon:main``.
"""

from __future__ import annotations

from ._cli import main, nyxd, parse

__all__ = ["main", "nyxd", "parse"]
