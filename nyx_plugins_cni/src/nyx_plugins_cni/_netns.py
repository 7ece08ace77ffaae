"""A scratch network namespace owned by a helper thread (no mount, no name, no process)."""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from nyx_core import BackendError

__all__ = ["scratch_netns"]

_CLONE_NEWNET = 0x40000000


@contextmanager
def scratch_netns() -> Iterator[str]:
    """Yield the path of a fresh, empty network namespace; it vanishes on exit.

    A helper thread ``unshare``\\ s its network namespace and waits; the namespace lives as
    long as the thread (``/proc/<pid>/task/<tid>/ns/net``).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    ready, done = threading.Event(), threading.Event()
    box: dict[str, object] = {}

    def hold() -> None:
        try:
            if libc.unshare(_CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
            box["path"] = f"/proc/{os.getpid()}/task/{threading.get_native_id()}/ns/net"
        except OSError as exc:
            box["error"] = exc
        finally:
            ready.set()
        if "path" in box:
            done.wait()

    thread = threading.Thread(target=hold, name="nyx-cni-scratch-netns", daemon=True)
    thread.start()
    ready.wait()
    if "error" in box:
        thread.join()
        raise BackendError(f"cannot create a scratch network namespace: {box['error']}")
    try:
        yield str(box["path"])
    finally:
        done.set()
        thread.join()
