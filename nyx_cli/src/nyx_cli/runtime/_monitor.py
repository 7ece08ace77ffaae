"""The per-container monitor: starts ``runc run -d`` and records the init's exit status.

A container's init is re-parented, when ``runc run -d`` exits, to its nearest ancestor that
is a child subreaper; only that process can read its exit status (``wait``), and a nyxd
started again after a crash is no ancestor of it. So nyxd does not run runc itself: it
starts this monitor (a small process of its own session, which outlives nyxd), which makes
itself the subreaper, runs runc, reports the init's pid, waits for the init and writes its
exit status to a file that any nyxd reads later, the one that started the container or
the next one. This is what podman's conmon does.

Run as ``python -S -I _monitor.py STATUS_DIR PID_FILE -- RUNC_ARGV...`` with:

- fd 0: nyxd's acknowledgement: the monitor reaps nothing until it reads EOF there (nyxd
  closes it once it holds a pidfd of the init, so the pid cannot be reused before; a dead
  nyxd closes it too);
- fd 1: the report to nyxd, one line: ``pid <init pid>`` or ``runc <exit status>``;
- fd 2: the container's log, runc's stdout and stderr (and so the container's).

``STATUS_DIR/exit`` gets ``{"pid": P, "exit_code": N}`` (128+N for signal N), written
atomically. Standard library only, no site-packages (``-S -I``): it starts in ~10 ms and
keeps ~3 MiB of private memory per running container.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys

_PR_SET_CHILD_SUBREAPER = 36


def _report(line: str) -> None:
    try:
        os.write(1, (line + "\n").encode())
    except OSError:
        pass  # nyxd is gone: the container runs on, its status is still written
    try:
        os.close(1)
    except OSError:
        pass


def _write_status(status_dir: str, pid: int, code: int) -> None:
    """``status_dir/exit`` atomically; nothing when the directory is gone (the container
    was removed meanwhile): the monitor never creates it."""
    tmp = os.path.join(status_dir, f".exit.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps({"pid": pid, "exit_code": code}))
        os.replace(tmp, os.path.join(status_dir, "exit"))
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def main(argv: list[str]) -> int:
    status_dir, pid_file, sep, *runc = argv
    if sep != "--" or not runc:
        print("usage: _monitor.py STATUS_DIR PID_FILE -- RUNC_ARGV...", file=sys.stderr)
        return 2
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)  # only the container's end ends the monitor
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        _report(f"runc 126 prctl: {os.strerror(ctypes.get_errno())}")
        return 126
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        child = os.posix_spawn(runc[0], runc, os.environ, file_actions=[
            (os.POSIX_SPAWN_DUP2, null, 0),
            (os.POSIX_SPAWN_DUP2, 2, 1),
        ])  # fmt: skip
    except OSError as exc:
        _report(f"runc 127 {exc}")
        return 127
    os.close(null)
    early: dict[int, int] = {}  # reaped before runc's own exit was seen: the init, maybe
    while True:
        got, status = os.waitpid(-1, 0)
        if got == child:
            break
        early[got] = status
    if (rc := _code(status)) != 0:
        _report(f"runc {rc}")
        return rc
    try:
        with open(pid_file) as f:
            init = int(f.read().strip())
    except (OSError, ValueError) as exc:
        _report(f"runc 125 no pid file: {exc}")
        return 125
    _report(f"pid {init}")
    os.close(2)  # the container's log stays open in the container only
    while os.read(0, 4096):  # until nyxd holds a pidfd of the init (or is gone)
        pass
    os.close(0)
    if init in early:
        _write_status(status_dir, init, _code(early[init]))
        return 0
    while True:
        try:
            got, status = os.waitpid(-1, 0)
        except ChildProcessError:  # the init is nobody's child here any more
            return 0
        if got == init:
            _write_status(status_dir, init, _code(status))
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
