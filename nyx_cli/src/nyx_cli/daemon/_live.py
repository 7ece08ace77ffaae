"""The in-memory companion of a container record: its locks and lifecycle events."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from ._health import HealthConfig
from ._restart import Backoff
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
    started_at: float = 0.0  # the supervisor's clock when it last started (or was adopted)
    backoff: Backoff = field(default_factory=Backoff)  # delay before the next restart
    restart_timer: Any = None  # the pending restart (has .cancel()), while "restarting"
    health: HealthConfig | None = None  # the probe its health thread runs
    health_stop: threading.Event = field(default_factory=threading.Event)  # ends that thread
