"""A hook-call recorder (like pytest's ``HookRecorder``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pluggy

__all__ = ["HookCall", "HookRecorder"]


@dataclass
class HookCall:
    name: str
    kwargs: dict[str, Any]
    outcome: Any = None


@dataclass
class HookRecorder:
    """Records hook calls made through ``pm`` until :meth:`close`."""

    pm: pluggy.PluginManager
    calls: list[HookCall] = field(default_factory=list)

    def __post_init__(self) -> None:
        def before(name: str, impls: Any, kwargs: Mapping[str, Any]) -> None:
            self.calls.append(HookCall(name, dict(kwargs)))

        def after(outcome: Any, name: str, impls: Any, kwargs: Mapping[str, Any]) -> None:
            for call in reversed(self.calls):
                if call.name == name:
                    call.outcome = outcome
                    break

        self._undo = self.pm.add_hookcall_monitoring(before, after)

    def names(self) -> list[str]:
        return [c.name for c in self.calls]

    def close(self) -> None:
        self._undo()
