"""Restart policies: when nyxd starts a container again after it ends, and how soon.

A policy is one of docker's (``--restart``, compose ``restart:``):

- ``no`` (the default): never;
- ``on-failure[:N]``: when it exits non-zero, at most ``N`` times (no limit without ``N``);
- ``always``: whenever it ends by itself, and at nyxd's start even if stopped by hand;
- ``unless-stopped``: as ``always``, but not at nyxd's start once stopped by hand.

A stop by hand (``nyx stop``, ``POST .../stop``) is never followed by a restart, and nor is
the stop of every container at nyxd's shutdown. :class:`Backoff` is docker's delay: 100 ms
before the first restart, doubled before each next one up to one minute, back to 100 ms
once a run lasted 10 s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "BACKOFF_FIRST",
    "BACKOFF_MAX",
    "BACKOFF_RESET_AFTER",
    "POLICIES",
    "Backoff",
    "RestartPolicy",
]

PolicyName = Literal["no", "on-failure", "always", "unless-stopped"]
POLICIES: tuple[PolicyName, ...] = ("no", "on-failure", "always", "unless-stopped")
BACKOFF_FIRST = 0.1  # seconds: docker's restartmanager defaultTimeout
BACKOFF_MAX = 60.0  # maxRestartTimeout
BACKOFF_RESET_AFTER = 10.0  # a run at least this long starts the doubling again

_ON_FAILURE_RE = re.compile(r"^on-failure:(\d+)$")


@dataclass(frozen=True)
class RestartPolicy:
    """A parsed policy; ``max_retries`` only with ``on-failure`` (``None``: no limit)."""

    name: PolicyName = "no"
    max_retries: int | None = None

    @classmethod
    def parse(cls, text: object) -> RestartPolicy:
        """``no``, ``always``, ``unless-stopped``, ``on-failure`` or ``on-failure:N`` (N >= 1).

        :raises ValueError: naming the value and what is accepted.
        """
        if not isinstance(text, str):
            raise ValueError(f"restart policy {text!r} must be a string")
        if text in POLICIES:
            return cls(text)
        m = _ON_FAILURE_RE.match(text)
        if m and int(m.group(1)) >= 1:
            return cls("on-failure", int(m.group(1)))
        if m or text.startswith("on-failure:"):
            raise ValueError(
                f"restart policy {text!r}: on-failure:N needs a retry count N >= 1 "
                "(on-failure alone has no limit)"
            )
        if ":" in text and text.partition(":")[0] in POLICIES:
            raise ValueError(
                f"restart policy {text!r}: a retry count goes only with on-failure (on-failure:N)"
            )
        raise ValueError(
            f"restart policy {text!r} is not one of no, on-failure[:N], always, unless-stopped"
        )

    def __str__(self) -> str:
        return f"{self.name}:{self.max_retries}" if self.max_retries else self.name

    def after_exit(self, exit_code: int | None, restarts: int) -> bool:
        """Whether a container that ended by itself (not stopped) starts again.

        ``restarts``: how many times this policy restarted it already (``on-failure:N``
        stops at ``N``). An unknown exit code counts as a failure.
        """
        if self.name in ("always", "unless-stopped"):
            return True
        if self.name == "on-failure":
            if self.max_retries is not None and restarts >= self.max_retries:
                return False
            return exit_code != 0
        return False

    def at_nyxd_start(self, stopped_by_hand: bool) -> bool:
        """Whether nyxd starts the container again when it starts (after a restart of nyxd
        or a reboot): ``always`` does, ``unless-stopped`` unless it was stopped by hand."""
        if self.name == "always":
            return True
        return self.name == "unless-stopped" and not stopped_by_hand


class Backoff:
    """docker's restart delay for one container (kept in memory, reset by a nyxd restart)."""

    def __init__(self) -> None:
        self.delay = 0.0

    def next(self, uptime: float) -> float:
        """The delay before the next restart of a container whose last run lasted ``uptime``
        seconds: 0.1 s, then doubled each time up to 60 s; 0.1 s again after a run of 10 s."""
        if uptime >= BACKOFF_RESET_AFTER:
            self.delay = 0.0
        if self.delay == 0.0:
            self.delay = BACKOFF_FIRST
        elif self.delay < BACKOFF_MAX:
            self.delay *= 2
        self.delay = min(self.delay, BACKOFF_MAX)
        return self.delay
