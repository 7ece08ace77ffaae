"""The per-container monitor: starts ``runc run -d`` and records the init's exit status.

A container's init is re-parented, when ``runc run -d`` exits, to its nearest ancestor that
is a child subreaper; only that process can read its exit status (``wait``), and a nyxd
started again after a crash is no ancestor of it. So nyxd does not run runc itself: it
starts this monitor (a small process of its own session, which outlives nyxd), which makes
itself the subreaper, runs runc, reports the init's pid, waits for the init and writes its
exit status to a file that any nyxd reads later, the one that started the container or
the next one. This is what podman's conmon does.

Run as ``python -S -I _monitor.py`` (standard library only, no site-packages). nyxd keeps
one started ahead (a warm spare), so a container start does not wait for an interpreter:

- fd 0, from nyxd: one JSON line, the command ``{"status_dir", "pid_file", "log", "runc":
  [argv]}`` (EOF instead: the spare is not needed, it exits); then EOF is nyxd's
  acknowledgement: the monitor reaps nothing until then (nyxd closes it once it holds a
  pidfd of the init, so the pid cannot be reused before; a dead nyxd closes it too);
- fd 1, to nyxd: one line, ``pid <init pid>`` or ``runc <exit status> [why]``.

runc's stdout and stderr (and so the container's) go to ``log`` (appended). The monitor's
working directory is its ``status_dir`` (how a later nyxd knows whose monitor a pid is);
``status_dir/exit`` gets ``{"pid": P, "exit_code": N}`` (128+N for signal N), atomically.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys

_PR_SET_CHILD_SUBREAPER = 36
_FIELDS = ("status_dir", "pid_file", "log")


def _report(line: str) -> None:
    try:
        os.write(1, (line + "\n").encode())
    except OSError:
        pass  # nyxd is gone: the container runs on, its status is still written
    try:
        os.close(1)
    except OSError:
        pass


def _command() -> tuple[str, str, str, list[str]] | None:
    """nyxd's command line from fd 0 (read unbuffered: the EOF after it is the ack):
    ``(status_dir, pid_file, log, runc argv)``; ``None`` on EOF before it (an unneeded
    spare). :raises ValueError: the line is not a command."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(0, 65536)
        if not chunk:
            return None
        data += chunk
    got = json.loads(data)
    if not isinstance(got, dict):
        raise ValueError(f"command: not a JSON object: {got!r}")
    fields = [got.get(k) for k in _FIELDS]
    paths = [f for f in fields if isinstance(f, str) and f]
    if len(paths) != len(_FIELDS):
        raise ValueError(f"command: {', '.join(_FIELDS)} must be paths, not {fields!r}")
    runc = got.get("runc")
    argv = [a for a in runc if isinstance(a, str)] if isinstance(runc, list) else []
    if not argv or argv != runc:
        raise ValueError(f"command: runc must be a non-empty argv, not {runc!r}")
    return paths[0], paths[1], paths[2], argv


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


def main() -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)  # only the container's end ends the monitor
    libc = ctypes.CDLL(None, use_errno=True)
    subreaper = libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    why = "" if subreaper else os.strerror(ctypes.get_errno())
    try:
        cmd = _command()
    except ValueError as exc:  # JSONDecodeError is one
        _report(f"runc 2 {exc}")
        return 2
    if cmd is None:
        return 0  # a spare nyxd did not need
    status_dir, pid_file, log_path, runc = cmd
    if not subreaper:
        _report(f"runc 126 prctl(PR_SET_CHILD_SUBREAPER): {why}")
        return 126
    try:
        os.chdir(status_dir)
        log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        child = os.posix_spawn(runc[0], runc, os.environ, file_actions=[
            (os.POSIX_SPAWN_DUP2, null, 0),
            (os.POSIX_SPAWN_DUP2, log, 1),
            (os.POSIX_SPAWN_DUP2, log, 2),
        ])  # fmt: skip
    except OSError as exc:
        _report(f"runc 127 {exc}")
        return 127
    os.close(null)
    os.close(log)
    # runc alone: the init, re-parented here, stays a zombie (its pid taken) until the ack
    _, status = os.waitpid(child, 0)
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
    while os.read(0, 4096):  # until nyxd holds a pidfd of the init (or is gone)
        pass
    os.close(0)
    while True:
        try:
            got, status = os.waitpid(-1, 0)
        except ChildProcessError:  # the init is nobody's child here any more
            return 0
        if got == init:
            _write_status(status_dir, init, _code(status))
            return 0


if __name__ == "__main__":
    sys.exit(main())
