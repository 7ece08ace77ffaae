"""``python -m nyx_cli.client``: the ``nyx`` command."""

from __future__ import annotations

from . import main

main()
