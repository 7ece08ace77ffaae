"""One thread that notices the end of every container's init: an epoll of pidfds.

A thread per running container blocked in its own wait costs ~17 KiB of resident memory
and a thread start each, a thousand of them at a restart that re-adopts a thousand
containers. :class:`ExitWatcher` holds a pidfd per process in one epoll instead, and runs the
process's ``on_exit`` in a short-lived thread of its own once it has ended (a pidfd becomes
readable when its process exits, zombie or reaped). It only notices: reaping and reading the
exit status stay with whoever waits in ``on_exit`` (the runtime's ``wait``).
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable

from loguru import logger

__all__ = ["ExitWatcher"]


class ExitWatcher:
    """Calls ``on_exit`` once process ``pid`` has ended (see :meth:`watch`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._epoll: select.epoll | None = None
        self._waiting: dict[int, tuple[str, Callable[[], None]]] = {}  # pidfd -> its callback

    def watch(
        self, pid: int, name: str, on_exit: Callable[[], None], pidfd: int | None = None
    ) -> None:
        """Run ``on_exit`` in a thread named ``name`` once ``pid`` has ended (at once when
        it is gone already). ``pidfd``: a pidfd of it to watch (the watcher closes it), else
        one is opened now. Without pidfds (Linux < 5.3) a thread waits in ``on_exit`` right
        away, which must then block until the end itself."""
        fd = pidfd
        if fd is None:
            try:
                fd = os.pidfd_open(pid)
            except (OSError, AttributeError):  # gone already, or no pidfds
                _spawn(name, on_exit)
                return
        with self._lock:
            if self._epoll is None:
                self._epoll = select.epoll()
                threading.Thread(target=self._loop, name="exits", daemon=True).start()
            self._waiting[fd] = (name, on_exit)
            self._epoll.register(fd, select.EPOLLIN)

    def watched(self) -> int:
        """How many processes are being watched."""
        with self._lock:
            return len(self._waiting)

    def _loop(self) -> None:
        assert self._epoll is not None
        while True:
            try:
                events = self._epoll.poll()
            except InterruptedError:
                continue
            for fd, _mask in events:
                with self._lock:
                    name, on_exit = self._waiting.pop(fd)
                    self._epoll.unregister(fd)
                os.close(fd)
                _spawn(name, on_exit)


def _spawn(name: str, on_exit: Callable[[], None]) -> None:
    def run() -> None:
        try:
            on_exit()
        except Exception as exc:  # the callback logs its own; this is the last resort
            logger.bind(error=repr(exc)).error("exit handler failed")

    threading.Thread(target=run, name=name, daemon=True).start()
