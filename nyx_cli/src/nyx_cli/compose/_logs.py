"""The stack in the foreground: its containers' logs followed and prefixed like Compose's,
and the waits a signal must be able to interrupt (Ctrl+C stops the stack)."""

from __future__ import annotations

import queue
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from http.client import HTTPException
from types import FrameType
from typing import Any, NoReturn
from urllib.parse import quote

import click

from ._stack import ApiError, DaemonClient, _cid, _service_of

__all__: list[str] = []


def _prefix(container: Mapping[str, Any], project: str) -> str:
    return f"{_service_of(container, project)}-1"


def _follow(
    client: DaemonClient,
    containers: Sequence[Mapping[str, Any]],
    project: str,
    follow: bool,
    on_interrupt: Callable[[], None] | None = None,
) -> None:
    """Print the containers' logs, prefixed like Compose; with ``follow`` until they end
    (nyxd's follow goes on while a container restarts by its policy)."""
    width = max((len(_prefix(c, project)) for c in containers), default=0)
    events: queue.Queue[tuple[str, str] | Mapping[str, Any]] = queue.Queue()
    suffix = "?follow=1" if follow else ""

    def pump(container: Mapping[str, Any]) -> None:
        label = _prefix(container, project).ljust(width)
        try:
            for raw in client.stream(
                f"/v1/containers/{quote(_cid(container), safe='')}/logs{suffix}"
            ):
                events.put((label, raw.decode(errors="replace").rstrip("\r\n")))
        except (ApiError, click.ClickException, OSError, HTTPException) as exc:
            events.put((label, f"(logs ended: {exc})"))
        finally:
            events.put(container)

    if not follow:
        for c in containers:
            label = _prefix(c, project).ljust(width)
            for raw in client.stream(f"/v1/containers/{quote(_cid(c), safe='')}/logs"):
                click.echo(f"{label}  | {raw.decode(errors='replace').rstrip(chr(13) + chr(10))}")
        return

    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: FrameType | None) -> NoReturn:
        raise KeyboardInterrupt

    def start(container: Mapping[str, Any]) -> None:
        threading.Thread(target=pump, args=(container,), daemon=True).start()

    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        signal.signal(signal.SIGTERM, on_term)
    pending = len(containers)
    try:
        for c in containers:
            start(c)
        while pending:
            try:
                item = events.get(timeout=0.5)
            except queue.Empty:
                continue
            if isinstance(item, tuple):
                click.echo(f"{item[0]}  | {item[1]}")
                continue
            pending -= 1
    except KeyboardInterrupt:
        if on_interrupt is None:
            raise SystemExit(130) from None
        on_interrupt()
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def _interruptible(call: Callable[[], object]) -> bool:
    """Run ``call`` in a helper thread so a signal interrupts the wait, not the request
    (whose connection then still finishes and closes cleanly). ``False`` on an API error."""
    done = threading.Event()
    failed: list[BaseException] = []

    def work() -> None:
        try:
            call()
        except (ApiError, click.ClickException) as exc:
            failed.append(exc)
        finally:
            done.set()

    threading.Thread(target=work, daemon=True).start()
    while not done.wait(0.2):
        pass
    return not failed
