"""Test-only fault points: where a crash test can make nyxd die on purpose.

The supervisor calls :meth:`Faults.hit` with a point name before every step of a container's
start (``start:netns`` ... ``start:runtime``) and teardown (``undo:<step>``). With no point
armed (always, in production) it does nothing.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable

__all__ = ["Faults"]


class Faults:
    """The armed fault points: reaching one kills nyxd with SIGKILL."""

    def __init__(self, points: Iterable[str] = ()) -> None:
        self.points = frozenset(points)

    def hit(self, point: str) -> None:
        if point in self.points:
            os.kill(os.getpid(), signal.SIGKILL)
