"""The single pluggy marker pair of the project (project name ``"nyx"``)."""

from __future__ import annotations

import pluggy

PROJECT_NAME = "nyx"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
