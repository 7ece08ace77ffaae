"""The per-container monitor: starts ``runc run -d`` and records the init's exit status.

A container's init is re-parented, when ``runc run -d`` exits, to its nearest ancestor that
is a child subreaper; only that process can read its exit status (``wait``), and a nyxd
started again after a crash is no ancestor of it. So nyxd does not run runc itself: it
starts this monitor (a small process of its own session, which outlives nyxd), which makes
itself the subreaper, runs runc, reports the init's pid, waits for the init and writes its
exit status to a file that any nyxd reads later, the one that started the container or
the next one. This is what podman's conmon does.

Run as ``python -S -I _monitor.py`` (standard library only, no site-packages), or, what
nyxd does, forked by the fork server ``python -S -I _monitor.py --server`` (:func:`serve`):
one long-lived process of its own session that imported what a monitor needs and forks one
per container start, so a start waits for no interpreter and a monitor costs the pages it
writes (~0.5 MiB) instead of a whole interpreter (~4.5 MiB PSS). Either way a monitor
speaks this protocol (:func:`main`):

- fd 0, from nyxd: one JSON line, the command ``{"status_dir", "pid_file", "log", "runc":
  [argv]}`` (EOF instead: the monitor is not needed, it exits); then EOF is nyxd's
  acknowledgement: the monitor reaps nothing until then (nyxd closes it once it holds a
  pidfd of the init, so the pid cannot be reused before; a dead nyxd closes it too);
- fd 1, to nyxd: one line, ``pid <init pid>`` or ``runc <exit status> [why]``.

runc's stdout and stderr (and so the container's) go to ``log`` (appended). The monitor's
working directory is its ``status_dir`` (how a later nyxd knows whose monitor a pid is);
``status_dir/exit`` gets ``{"pid": P, "exit_code": N}`` (128+N for signal N), atomically.

The fork server (fd 0: an ``AF_UNIX`` ``SOCK_SEQPACKET`` socket to nyxd; single-threaded):
each message ``fork`` carries, as ``SCM_RIGHTS``, the monitor's fd 0 and fd 1 (the ends of
nyxd's two pipes); the server forks, and answers ``<pid>`` with a pidfd of the child (taken
before the server can reap it, so it names that child and no other) or ``error <why>``. The
child makes itself a session of its own, puts the two fds on 0 and 1, closes every other
descriptor (the socket to nyxd included), restores SIGCHLD and runs :func:`main`; it is an
independent process from then on: neither the server's death nor nyxd's affects it. The
server reaps its children (a self-pipe woken by SIGCHLD) and exits when nyxd closes the
socket (the running monitors stay).

A forked monitor shares the server's memory until either writes a page, so what a monitor
does is kept to C-level calls on things prepared at import (the libc handle, the
environment, the JSON scanner): ``signal.signal``'s enum wrappers, ``json.loads``, a text
``open`` or ``os.environ`` would each copy a few hundred KiB of the interpreter's pages
into every monitor.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # the C functions (no enum wrappers)
import ctypes
import gc
import json
import json.scanner
import os
import select
import signal
import socket
import sys
from typing import NoReturn

_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_NAME = 15
#: a forked monitor's name (``/proc/PID/comm``, what ``ps`` and ``top`` show); nyxd finds
#: by it the monitors a dying fork server forked but never told it of
MONITOR_NAME = b"nyx-monitor"
_FIELDS = ("status_dir", "pid_file", "log")
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl
_ENV = dict(os.environb)  # runc's environment: the monitor's own
# the C scanner, as json.loads uses it, without its re and codecs calls
_SCAN = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]  # typeshed
_OPEN_MAX = os.sysconf("SC_OPEN_MAX")


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
    monitor). :raises ValueError: the line is not a command."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(0, 65536)
        if not chunk:
            return None
        data += chunk
    text = data.decode().strip()  # UnicodeDecodeError is a ValueError
    try:
        got, end = _SCAN(text, 0)
    except StopIteration:
        raise ValueError(f"command: not JSON: {text[:80]!r}") from None
    if end != len(text):
        raise ValueError(f"command: not one JSON value: {text[:80]!r}")
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
        _signal.signal(sig, _signal.SIG_IGN)  # only the container's end ends the monitor
    subreaper = _PRCTL(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    why = "" if subreaper else os.strerror(ctypes.get_errno())
    try:
        cmd = _command()
    except ValueError as exc:  # JSONDecodeError is one
        _report(f"runc 2 {exc}")
        return 2
    if cmd is None:
        return 0  # a monitor nyxd did not need
    status_dir, pid_file, log_path, runc = cmd
    if not subreaper:
        _report(f"runc 126 prctl(PR_SET_CHILD_SUBREAPER): {why}")
        return 126
    try:
        os.chdir(status_dir)
        log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        child = os.posix_spawn(runc[0], runc, _ENV, file_actions=[
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
        fd = os.open(pid_file, os.O_RDONLY | os.O_CLOEXEC)
        try:
            init = int(os.read(fd, 64).strip())
        finally:
            os.close(fd)
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


def _forked(fds: list[int]) -> NoReturn:
    """The fork server's child: becomes a monitor on ``fds`` (its fd 0 and 1), see the module
    docstring; never returns to the server's loop."""
    code = 1
    try:
        _signal.set_wakeup_fd(-1)
        _signal.signal(signal.SIGCHLD, _signal.SIG_DFL)  # the server's; waitpid needs it
        _PRCTL(_PR_SET_NAME, MONITOR_NAME, 0, 0, 0)
        os.setsid()  # neither nyxd's process group nor the server's
        os.dup2(fds[0], 0)
        os.dup2(fds[1], 1)
        os.closerange(3, max(_OPEN_MAX, *fds) + 1)  # the socket to nyxd too
        code = main()
    except BaseException:  # a monitor never returns to the server's loop
        pass
    os._exit(code)


def _reap_children() -> None:
    while True:
        try:
            got, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if got == 0:
            return


def _answer(sock: socket.socket, msg: bytes, fds: list[int]) -> bool:
    try:
        socket.send_fds(sock, [msg], fds)
    except OSError:  # nyxd is gone
        return False
    return True


def serve() -> int:
    """The fork server (``--server``): forks a monitor per request on fd 0 until EOF."""
    sock = socket.socket(fileno=0)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # the wakeup fd; reaped in the loop only
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    gc.collect()
    gc.freeze()  # a child's collections never touch (so never copy) the server's objects
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    while True:
        for fd, events in poller.poll():
            if fd == wake_r:
                while True:
                    try:
                        if not os.read(wake_r, 512):
                            break
                    except BlockingIOError:
                        break
                _reap_children()
                continue
            try:
                msg, fds, _, _ = socket.recv_fds(sock, 64, 2, socket.MSG_CMSG_CLOEXEC)
            except OSError:
                return 0
            if not msg and events & (select.POLLHUP | select.POLLERR):
                return 0  # nyxd let the server go (or died): running monitors stay
            if msg != b"fork" or len(fds) != 2:
                for got in fds:
                    os.close(got)
                if not _answer(sock, b"error not a fork request with two fds", []):
                    return 0
                continue
            try:
                pid = os.fork()
            except OSError as exc:
                reply, pidfd = f"error fork: {exc}".encode(), -1
            else:
                if pid == 0:
                    _forked(fds)
                pidfd = os.pidfd_open(pid)  # not reaped before this: still that child
                reply = str(pid).encode()
            for got in fds:
                os.close(got)
            sent = _answer(sock, reply, [pidfd] if pidfd >= 0 else [])
            if pidfd >= 0:
                os.close(pidfd)
            if not sent:
                return 0


if __name__ == "__main__":
    sys.exit(serve() if sys.argv[1:] == ["--server"] else main())
