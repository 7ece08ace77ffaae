"""Test-only fault points: where a crash test makes nyxd die on purpose (SIGKILL).

nyxd passes through a named point before every step that changes the host or its records
(:data:`POINTS`): a container's start steps (``start:<step>``) and their undo
(``undo:<step>``), stop, exit and removal, an image load or pull (upload, download, each
blob and layer, the index), a network's create and remove. With nothing armed (always, in
production) :func:`checkpoint` is one set lookup.

Arming is for tests only: ``NYXD_TEST_FAULTS=point[,point...]`` is honoured only together
with ``NYXD_TEST_MODE=1``; nyxd refuses to start when the first is set without the second,
or names a point that does not exist (a typo would make a crash test pass without a crash).
See :func:`from_environ` and docs/reliability.md.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable, Mapping

__all__ = ["FAULTS", "POINTS", "Faults", "FaultsRefused", "arm", "checkpoint", "from_environ"]

#: every point nyx passes through; a test checks each is hit somewhere in the code
POINTS = frozenset(
    {
        # a container (daemon/_supervisor.py, daemon/_steps.py)
        "create:recorded",
        *(f"start:{s}" for s in ("netns", "network", "sysctls", "dns", "etc", "rootfs")),
        "start:runtime",
        "start:done",
        "stop:signal",
        "exit:teardown",
        *(f"undo:{s}" for s in ("runtime", "rootfs", "dns", "network", "netns")),
        "exit:recorded",
        "rm:teardown",
        "rm:forget",
        # images (daemon/_api.py, daemon/_supervisor.py, registry/_pull.py, images/_store.py,
        # images/_load.py)
        "load:uploaded",
        "pull:blob",
        "pull:fetched",
        "store:blob",
        "store:layer",
        "store:index",
        # networks (daemon/_networks.py)
        "network:create",
        "network:created",
        "network:remove",
        "network:removed",
    }
)

ENV_POINTS = "NYXD_TEST_FAULTS"
ENV_SWITCH = "NYXD_TEST_MODE"


class FaultsRefused(Exception):
    """Fault points armed where they must not be (no test switch, unknown point)."""


class Faults:
    """The armed fault points: reaching one kills this process with SIGKILL."""

    def __init__(self, points: Iterable[str] = ()) -> None:
        self.points = frozenset(points)

    def hit(self, point: str) -> None:
        if point in self.points:
            os.kill(os.getpid(), signal.SIGKILL)


#: the process-wide armed points (nothing unless nyxd's boot armed some for a test)
FAULTS = Faults()


def checkpoint(point: str) -> None:
    """Pass through ``point``: dies here when a test armed it."""
    FAULTS.hit(point)


def from_environ(environ: Mapping[str, str]) -> frozenset[str]:
    """The points ``environ`` arms, checked.

    :raises FaultsRefused: ``NYXD_TEST_FAULTS`` is set without ``NYXD_TEST_MODE=1``, or
        names an unknown point.
    """
    raw = environ.get(ENV_POINTS, "")
    points = frozenset(p.strip() for p in raw.split(",") if p.strip())
    if not points:
        return frozenset()
    if environ.get(ENV_SWITCH) != "1":
        raise FaultsRefused(
            f"{ENV_POINTS}={raw!r} arms test-only fault points (nyxd kills itself there); "
            f"refusing to start without {ENV_SWITCH}=1, which only the test suite sets"
        )
    unknown = sorted(points - POINTS)
    if unknown:
        raise FaultsRefused(
            f"{ENV_POINTS}: unknown fault point(s) {', '.join(unknown)}; known: "
            + ", ".join(sorted(POINTS))
        )
    return points


def arm(points: Iterable[str]) -> None:
    """Arm ``points`` process-wide (nyxd's boot, after :func:`from_environ`)."""
    FAULTS.points = frozenset(points)
