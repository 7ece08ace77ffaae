"""nyx_core.testing: the test kit for nyx drivers (opt in with
``pytest_plugins = ["nyx_core.testing"]``).

Fixtures (see :mod:`nyx_core.testing._pytest_plugin`):

* ``nyx_host_ns``: a throwaway "host" network namespace; the driver under test runs there.
* ``nyx_container_ns``: a factory of container namespaces.
* ``nyx_in_host``: the test thread switched into ``nyx_host_ns`` for the test's duration.
* ``nyx_settings``: :class:`~nyx_core.NyxSettings` with state/run dirs under ``tmp_path``.
* ``nyx_hook_recorder``: records every hook call made through a plugin manager.

:class:`BackendConformance` is the conformance suite: subclass it in your tests and provide
the ``nyx_driver_name`` fixture (and ``nyx_backend`` when the driver needs more setup).
"""

from __future__ import annotations

from ._conformance import BackendConformance
from ._netns import Netns, entered, snapshot
from ._pytest_plugin import *  # noqa: F403  (fixtures are found by pytest through this module)
from ._recorder import HookRecorder

__all__ = ["BackendConformance", "HookRecorder", "Netns", "entered", "snapshot"]
