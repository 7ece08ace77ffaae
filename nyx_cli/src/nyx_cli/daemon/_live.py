"""The in-memory companion of a container record: its locks and lifecycle events."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ._state import ContainerRecord

__all__ = ["Live"]


@dataclass
class Live:
    """In-memory companion of a record: locks and events for its lifecycle."""

    rec: ContainerRecord
    lock: threading.RLock = field(default_factory=threading.RLock)
    exited: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    stop_requested: bool = False
    removed: bool = False
    adopted: bool = False  # left running by a previous nyxd: not our child, signal via runc
