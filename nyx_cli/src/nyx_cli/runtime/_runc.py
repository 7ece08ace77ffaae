"""Running containers with runc: :class:`RuncRuntime` writes the bundle (:mod:`._bundle`)
and drives ``runc``; the overlay rootfs is :mod:`._rootfs`, the process :mod:`._process`.

Exit codes: ``runc run -d`` runs under a per-container monitor
(:mod:`nyx_cli.runtime._monitor`, podman's conmon in a few lines of Python): the monitor is
the init's subreaper, outlives nyxd, and writes the init's exit status to
``<run_dir>/monitors/<id>/exit``, which :meth:`RuncRuntime.wait` reads, in the nyxd that
started the container or in the next one (a re-adopted container reports its real exit
code). Only when the monitor itself was killed is the code unknown: 255.

Each monitor is forked by one long-lived fork server of nyxd's (:class:`_ForkServer`,
``_monitor.py --server``): a start waits for no interpreter, and a monitor costs only the
pages it writes. nyxd holds a pidfd of each monitor (sent by the server) to wait for it.
A fork server that died is replaced at the next start; without one (it cannot be started,
or ``fork_server=False``) each monitor is an interpreter of its own.
"""

from __future__ import annotations

import builtins
import contextlib
import ctypes
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from nyx_core.errors import ConfigError

from ..errors import RuntimeErrorNyx
from ._bundle import _BundleWriter, _write_private
from ._monitor import MONITOR_NAME
from ._seccomp import CAPABILITIES, DEFAULT_CAPABILITIES, x32_abi

__all__ = [
    "DEFAULT_PIDS_LIMIT",
    "INIT_PATHS",
    "RuncRuntime",
    "become_subreaper",
    "find_init",
]

DEFAULT_PIDS_LIMIT = 2048  # podman's default (docker has none)
UNKNOWN_EXIT = 255
MONITOR = str(Path(__file__).with_name("_monitor.py"))
_NO_RUNC_ERROR = "failed (no error message)"
#: static init binaries looked for, in order, when nyxd is not told one (NYXD_INIT_PATH):
#: Debian's tini (Docker's docker-init is tini too), then podman's catatonit
INIT_PATHS = (
    "/usr/bin/tini-static",
    "/usr/libexec/docker/docker-init",
    "/usr/bin/docker-init",
    "/usr/libexec/podman/catatonit",
    "/usr/bin/catatonit",
)
_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper(enable: bool = True) -> None:
    """Make this process (nyxd) the reaper of its orphaned descendants, i.e. containers."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, int(enable), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise RuntimeErrorNyx(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def find_init(explicit: Path | None = None) -> Path | None:
    """The init binary for ``--init``: ``explicit`` when given, else the first of
    :data:`INIT_PATHS` that exists; ``None`` when there is none.

    :raises ConfigError: ``explicit`` is not an executable regular file.
    """
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file() or not os.access(path, os.X_OK):
            raise ConfigError(f"init_path: {str(path)!r} is not an executable file")
        return path
    for candidate in INIT_PATHS:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


class RuncRuntime(_BundleWriter):
    """``runc`` with its state under ``root`` (``runc --root``)."""

    def __init__(
        self,
        root: Path,
        runc: str = "runc",
        cgroup_parent: str = "/nyx",
        seccomp: bool = True,
        capabilities: Sequence[str] = tuple(DEFAULT_CAPABILITIES),
        pids_limit: int = DEFAULT_PIDS_LIMIT,
        fork_server: bool = False,
        nofile: tuple[int, int] | None = None,
    ) -> None:
        """``capabilities``: the container's bounding/effective/permitted set; the seccomp
        profile follows it (Docker's rules). ``pids_limit``: most tasks in the container's
        cgroup; 0 or -1 is unlimited. ``fork_server``: fork each container's monitor from
        one fork server (nyxd does; started at the first container start, again after it
        died), so a start waits for no interpreter and a monitor is no interpreter of its
        own; :meth:`close` lets it go. Else each monitor is a ``python`` of its own.
        ``nofile``: the containers' ``RLIMIT_NOFILE`` (soft, hard), when not runc's own.
        """
        unknown = sorted(set(capabilities) - CAPABILITIES)
        if unknown:
            raise ConfigError(f"capabilities: unknown capability {', '.join(unknown)}")
        if isinstance(pids_limit, bool) or not isinstance(pids_limit, int) or pids_limit < -1:
            raise ConfigError(f"pids_limit: {pids_limit!r} is not a count, 0 or -1")
        self.seccomp = seccomp
        self.capabilities = list(dict.fromkeys(capabilities))
        self.pids_limit = pids_limit
        self.nofile = nofile
        self.root = Path(root)
        self.runc = runc
        self.cgroup_parent = "/" + cgroup_parent.strip("/")
        self._exit_codes: dict[tuple[str, int], int] = {}  # until delete(); pids get reused
        self._lock = threading.Lock()
        #: per started container: its monitor and a pidfd of its init
        self._monitors: dict[tuple[str, int], _Monitor] = {}
        self._pidfds: dict[tuple[str, int], int] = {}
        self.monitors_dir = self.root.parent / "monitors"
        self.fork_server = fork_server
        self._server: _ForkServer | None = None  # started at the first container start
        self._server_lock = threading.Lock()  # one request at a time on its socket
        if seccomp:  # asked once per process, off the first start's path
            threading.Thread(target=x32_abi, name="nyx-x32-probe", daemon=True).start()

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            return subprocess.run(
                [self.runc, "--root", str(self.root), *args],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeErrorNyx(f"runc {args[0]}: {exc}") from exc

    def _monitor(self) -> _Monitor:
        """A started monitor waiting for its command: forked by the fork server (a new
        server when there is none yet, or the last one died: once more), else, without a
        server, an interpreter of its own.

        :raises OSError: no monitor could be started.
        """
        if not self.fork_server:
            return _spawn_monitor()
        with self._server_lock:
            for _ in range(2):
                server = self._server
                if server is None:
                    try:
                        server = self._server = _ForkServer()
                    except OSError:
                        break
                try:
                    return server.fork()
                except OSError:  # it died, or does not answer: the next one
                    self._server = None
                    server.close(kill=True)
                    self._sweep_orphans()
        return _spawn_monitor()

    def _sweep_orphans(self, within: float = 5.0) -> None:
        """A server that died (or was killed) between forking a monitor and answering left
        that monitor to nyxd, the subreaper above it, without nyxd knowing its pid; it
        exits at once (its command pipe is closed) and would stay a zombie until nyxd
        exits. Reap it, on a thread of its own for up to ``within`` seconds."""

        def sweep() -> None:
            deadline = time.monotonic() + within
            while time.monotonic() < deadline:
                with self._lock:
                    inits = {pid for _cid, pid in self._pidfds}
                if reap_orphaned_monitors(inits):
                    return
                time.sleep(0.05)

        threading.Thread(target=sweep, name="nyx-monitor-sweep", daemon=True).start()

    def close(self) -> None:
        """Let the fork server go (it exits on EOF); running containers keep their
        monitors."""
        with self._server_lock:
            server, self._server = self._server, None
        if server is not None:
            server.close()

    def status_dir(self, container_id: str) -> Path:
        """Where the container's monitor writes: ``monitor`` (its pid), ``exit``."""
        return self.monitors_dir / container_id

    def start(self, container_id: str, bundle: Path, log_path: Path) -> int:
        """``runc run -d`` under the container's monitor (see the module docstring), output
        appended to ``log_path``; returns the init's pid.

        :raises RuntimeErrorNyx: with runc's own error message; nothing is left behind.
        """
        bundle = Path(bundle)
        config_path = bundle / "config.json"
        config = json.loads(config_path.read_text())
        if "cgroupsPath" not in config.get("linux", {}):
            config.setdefault("linux", {})["cgroupsPath"] = f"{self.cgroup_parent}/{container_id}"
            _write_private(config_path, json.dumps(config, indent=1))
        pid_file = bundle / "init.pid"
        pid_file.unlink(missing_ok=True)
        runc_log = bundle / "runc.log"
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        status = self.status_dir(container_id)
        shutil.rmtree(status, ignore_errors=True)
        status.mkdir(parents=True, mode=0o700)
        runc = [
            shutil.which(self.runc) or self.runc,
            "--root",
            str(self.root),
            "--log",
            str(runc_log),
            "--log-format",
            "json",
            "run",
            "-d",
            "--pid-file",
            str(pid_file),
            "--bundle",
            str(bundle),
            container_id,
        ]
        command = {"status_dir": str(status), "pid_file": str(pid_file), "log": str(log_path)}
        try:
            monitor = self._monitor()
        except OSError as exc:
            self.delete(container_id, force=True)
            raise RuntimeErrorNyx(f"runc run {container_id}: {exc}") from exc
        try:  # its pid first: once it has the command, runc may start the container
            _write_private(status / "monitor", str(monitor.pid))
            assert monitor.stdin is not None
            monitor.stdin.write(json.dumps({**command, "runc": runc}).encode() + b"\n")
            monitor.stdin.flush()
        except OSError as exc:  # the monitor got no command (or died): it exits on EOF
            _done(monitor)
            self.delete(container_id, force=True)
            raise RuntimeErrorNyx(f"runc run {container_id}: {exc}") from exc
        try:
            line = _read_line(monitor, timeout=120)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.killpg(monitor.pid, signal.SIGKILL)
            _done(monitor)
            self.delete(container_id, force=True)
            raise RuntimeErrorNyx(f"runc run {container_id}: {exc}") from exc
        what, _, rest = line.partition(" ")
        if what == "pid" and rest.isdigit():
            pid = int(rest)
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:  # reaped already: possible only without a monitor
                pidfd = -1
            with self._lock:
                self._monitors[(container_id, pid)] = monitor
                if pidfd >= 0:
                    self._pidfds[(container_id, pid)] = pidfd
            assert monitor.stdin is not None
            monitor.stdin.close()  # the acknowledgement: the monitor may reap the init now
            return pid
        _done(monitor)
        message = _runc_error(runc_log)
        if what != "runc" or message == _NO_RUNC_ERROR:
            message = rest.partition(" ")[2] or line or "the monitor failed"
        if "already exists" not in message:  # never touch the container that has this id
            self.delete(container_id, force=True)
        raise RuntimeErrorNyx(f"runc run {container_id}: {message}")

    def wait(self, container_id: str, pid: int, timeout: float | None = None) -> int | None:
        """The exit code of the container's init ``pid`` (128+N for signal N), or ``None``
        when it is still running after ``timeout`` seconds.

        Read from what the container's monitor wrote, also for a container a previous nyxd
        started; 255 only when the monitor was killed before the init ended.
        """
        key = (container_id, pid)
        with self._lock:
            if key in self._exit_codes:
                return self._exit_codes[key]
            pidfd = self._pidfds.get(key)
        if pidfd is None:
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                return self._collect(key)
            with self._lock:
                if key in self._pidfds:  # another waiter was first
                    os.close(pidfd)
                    pidfd = self._pidfds[key]
                else:
                    self._pidfds[key] = pidfd
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        ms = None if timeout is None else max(0, int(timeout * 1000))
        if not poller.poll(ms):
            return None
        return self._collect(key)

    def pidfd(self, container_id: str, pid: int) -> int | None:
        """A new descriptor (the caller closes it) of the init's pidfd: the one taken at
        start, before the monitor could reap the init (so never another process that got
        its pid), else one opened now (a container a previous nyxd started). None when the
        process is gone."""
        key = (container_id, pid)
        with self._lock:
            held = self._pidfds.get(key)
            if held is not None:
                return os.dup(held)
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return None
        with self._lock:
            if key in self._pidfds:  # a waiter was first
                os.close(fd)
                return os.dup(self._pidfds[key])
            self._pidfds[key] = fd
            return os.dup(fd)

    def send_signal(self, container_id: str, pid: int, sig: int) -> bool:
        """Signal the init through a pidfd (never another process that got its pid); False
        when there is no pidfd to use (the caller falls back to ``runc kill``)."""
        with self._lock:
            pidfd = self._pidfds.get((container_id, pid))
            if pidfd is None:
                return False
            try:
                signal.pidfd_send_signal(pidfd, sig)
            except ProcessLookupError:
                pass  # ended already
            return True

    def exit_status(self, container_id: str, pid: int | None = None) -> tuple[int, float] | None:
        """``(exit code, when)`` the container's monitor recorded (of ``pid``, if given), or
        ``None`` when it recorded nothing."""
        path = self.status_dir(container_id) / "exit"
        try:
            data = json.loads(path.read_text())
            when = path.stat().st_mtime
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("exit_code"), int):
            return None
        if pid is not None and data.get("pid") != pid:
            return None
        return int(data["exit_code"]), when

    def _monitor_gone(self, container_id: str, pid: int, timeout: float) -> None:
        """Wait (up to ``timeout`` s) for the container's monitor to exit: it writes the exit
        status just before. Ours through what we hold of it (reaped when it is our child);
        a previous nyxd's through a pidfd of the pid in its ``monitor`` file."""
        with self._lock:
            monitor = self._monitors.pop((container_id, pid), None)
        if monitor is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                monitor.wait(timeout)
            if isinstance(monitor, _ForkedMonitor):
                monitor.release()
            return
        try:
            mpid = int((self.status_dir(container_id) / "monitor").read_text())
            mfd = os.pidfd_open(mpid)
        except (OSError, ValueError):
            return
        try:  # still that monitor (pids are reused): it works in the container's status dir
            cwd = os.readlink(f"/proc/{mpid}/cwd").removesuffix(" (deleted)")
            ours = cwd == str(self.status_dir(container_id))
        except OSError:
            ours = False
        if not ours:
            os.close(mfd)
            return
        try:
            poller = select.poll()
            poller.register(mfd, select.POLLIN)
            poller.poll(int(timeout * 1000))
        finally:
            os.close(mfd)

    def _collect(self, key: tuple[str, int]) -> int:
        container_id, pid = key
        with self._lock:
            if key in self._exit_codes:
                return self._exit_codes[key]
        self._monitor_gone(container_id, pid, 10)
        got = self.exit_status(container_id, pid)
        code = got[0] if got is not None else self._reap(pid)
        with self._lock:
            self._exit_codes.setdefault(key, code)
            pidfd = self._pidfds.pop(key, None)
            if pidfd is not None:
                os.close(pidfd)
            return self._exit_codes[key]

    @staticmethod
    def _reap(pid: int) -> int:
        """The monitor recorded nothing (it was killed): nyxd, the subreaper above it, may
        have the init as a child; else the code is unknown (255)."""
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return UNKNOWN_EXIT
        if got == 0:
            got, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        return 128 - code if code < 0 else code

    def exec(
        self, container_id: str, args: Sequence[str], timeout: float, limit: int = 4096
    ) -> tuple[int | None, str]:
        """Run ``args`` in the running container (``runc exec``: its namespaces, cgroup,
        environment, user, working directory, capabilities and seccomp filter); returns the
        exit code (128+N for signal N) and the first ``limit`` bytes of stdout+stderr.

        After ``timeout`` seconds the process is killed (SIGKILL, through a pidfd taken while
        runc still waits for it, so never another process) and the code is ``None``.

        :raises RuntimeErrorNyx: runc could not be run.
        """
        scratch = Path(tempfile.mkdtemp(prefix="nyx-exec-"))
        pid_file = scratch / "pid"
        argv = [self.runc, "--root", str(self.root), "exec", "--pid-file", str(pid_file)]
        try:
            with tempfile.TemporaryFile() as out:
                try:
                    proc = subprocess.Popen(
                        [*argv, container_id, *args],
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=out,
                    )
                except OSError as exc:
                    raise RuntimeErrorNyx(f"runc exec {container_id}: {exc}") from exc
                try:
                    code: int | None = proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    code = None
                    _kill_exec(proc, pid_file)
                out.seek(0)
                text = out.read(limit).decode(errors="replace")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if code is not None and code < 0:
            code = 128 - code
        return code, text

    def kill(self, container_id: str, sig: int = 15) -> None:
        """Send ``sig`` to the container's init; a stopped or unknown container is no error."""
        proc = self._run("kill", container_id, str(int(sig)))
        if proc.returncode != 0 and not _gone(proc.stderr):
            raise RuntimeErrorNyx(f"runc kill {container_id}: {proc.stderr.strip()}")

    def state(self, container_id: str) -> dict[str, Any] | None:
        """runc's state (``status``: created/running/stopped, ``pid``...), ``None`` if unknown."""
        proc = self._run("state", container_id)
        if proc.returncode != 0:
            if _gone(proc.stderr):
                return None
            raise RuntimeErrorNyx(f"runc state {container_id}: {proc.stderr.strip()}")
        state: dict[str, Any] = json.loads(proc.stdout)
        return state

    def delete(self, container_id: str, force: bool = False) -> None:
        """Remove the container from runc (``force`` kills it first); idempotent."""
        args = ["delete", *(["--force"] if force else []), container_id]
        proc = self._run(*args)
        if proc.returncode != 0 and not _gone(proc.stderr):
            raise RuntimeErrorNyx(f"runc delete {container_id}: {proc.stderr.strip()}")
        with self._lock:
            for key in [k for k in self._exit_codes if k[0] == container_id]:
                del self._exit_codes[key]
            pids = {k[1] for k in [*self._monitors, *self._pidfds] if k[0] == container_id}
        for pid in sorted(pids) or [0]:
            self._monitor_gone(container_id, pid, 10)  # it writes into the dir until it ends
            got = self.exit_status(container_id, pid) if pid else None
            with self._lock:
                pidfd = self._pidfds.pop((container_id, pid), None)
                if got is not None:  # not waited for yet: a wait() after this still answers
                    self._exit_codes[(container_id, pid)] = got[0]
            if pidfd is not None:
                os.close(pidfd)
        shutil.rmtree(self.status_dir(container_id), ignore_errors=True)

    def remove_cgroup_parent(self) -> None:
        """Remove the (empty) ``cgroup_parent`` directories runc left; best-effort."""
        base = Path("/sys/fs/cgroup")
        rel = self.cgroup_parent.strip("/")
        if not rel:
            return
        candidates = [base / rel] + [d / rel for d in base.iterdir() if d.is_dir()]
        for path in candidates:
            try:
                path.rmdir()
            except OSError:
                pass

    def list(self) -> builtins.list[dict[str, Any]]:
        """All containers runc knows under this root: ``id``, ``pid`` and ``status`` (as
        ``runc list`` shows them; ``pid`` 0 when stopped).

        Read from runc's state files the way runc decides a status: the init's pid and
        start time (``state.json``) against ``/proc/<pid>/stat`` (gone, a zombie or another
        start time: ``stopped``), the exec fifo of one created but not started (nyx never
        pauses). ``runc list`` itself parses each container's whole config (~30 KB) and
        looks its owner up: ~0.7 ms a container, most of a restart with a thousand of
        them. A state file in another format makes it ask ``runc list`` after all.
        """
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        except OSError:
            return self._runc_list()
        out: builtins.list[dict[str, Any]] = []
        for name in names:
            try:
                with open(self.root / name / "state.json", "rb") as f:
                    raw = f.read(4096)  # the two fields come first; the config follows
                    pid_m, start_m = _STATE_PID.search(raw), _STATE_START.search(raw)
                    if pid_m is None or start_m is None:
                        raw += f.read()
                        pid_m, start_m = _STATE_PID.search(raw), _STATE_START.search(raw)
            except (FileNotFoundError, NotADirectoryError):
                continue  # not a container, or one runc is still creating (runc skips it)
            except OSError:
                return self._runc_list()
            if pid_m is None or start_m is None:
                return self._runc_list()
            pid, start = int(pid_m.group(1)), int(start_m.group(1))
            status = "stopped"
            if _proc_start(pid) == start:
                fifo = (self.root / name / "exec.fifo").exists()
                status = "created" if fifo else "running"
            out.append({"id": name, "pid": pid if status != "stopped" else 0, "status": status})
        return out

    def _runc_list(self) -> builtins.list[dict[str, Any]]:
        proc = self._run("list", "--format", "json")
        if proc.returncode != 0:
            raise RuntimeErrorNyx(f"runc list: {proc.stderr.strip()}")
        items = json.loads(proc.stdout or "null")
        return list(items) if isinstance(items, builtins.list) else []


_STATE_PID = re.compile(rb'"init_process_pid":\s*(\d+)')
_STATE_START = re.compile(rb'"init_process_start":\s*(\d+)')


def _proc_start(pid: int) -> int | None:
    """The start time (clock ticks after boot) of a live process ``pid``; None when there is
    none, or a zombie."""
    stat = _stat(pid)
    fields = [] if stat is None else stat[2].split()
    if len(fields) < 20 or fields[0] in (b"Z", b"X", b"x"):
        return None
    return int(fields[19])


def _kill_exec(proc: subprocess.Popen[bytes], pid_file: Path) -> None:
    """Kill a timed-out ``runc exec``: the process in the container first (its pid from
    runc's pid file, opened as a pidfd while runc, its parent, has not reaped it), then
    runc itself if it does not end."""
    try:
        pid = int(pid_file.read_text().strip())
        pidfd = os.pidfd_open(pid)
    except (OSError, ValueError):
        pidfd = None
    if pidfd is not None:
        try:
            if proc.poll() is None:  # runc still waits for it: the pid is still that process
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except OSError:
            pass
        finally:
            os.close(pidfd)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class _ForkedMonitor:
    """A monitor the fork server forked, as nyxd holds it: its pid, a pidfd of it, and
    nyxd's ends of its two pipes (``stdin``: the command, ``stdout``: the report), used as
    a :class:`subprocess.Popen` of the monitor is. Its exit status goes to its parent (the
    server; nyxd, a child subreaper, only when the server died before it)."""

    def __init__(self, pid: int, pidfd: int, stdin: IO[bytes], stdout: IO[bytes]) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.stdin: IO[bytes] | None = stdin
        self.stdout: IO[bytes] | None = stdout

    def wait(self, timeout: float | None = None) -> None:
        """Until it exited (reaped if it is our child).

        :raises subprocess.TimeoutExpired: still running after ``timeout`` seconds."""
        if self.pidfd < 0:
            return
        poller = select.poll()
        poller.register(self.pidfd, select.POLLIN)
        if not poller.poll(None if timeout is None else max(0, int(timeout * 1000))):
            raise subprocess.TimeoutExpired(f"monitor {self.pid}", timeout or 0)
        with contextlib.suppress(ChildProcessError):  # the fork server's child: it reaps it
            os.waitid(os.P_PIDFD, self.pidfd, os.WEXITED | os.WNOHANG)
        self.release()

    def release(self) -> None:
        """Close the pidfd (it is waited for no more)."""
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1


_Monitor = subprocess.Popen[bytes] | _ForkedMonitor


class _ForkServer:
    """The monitors' fork server (``_monitor.py --server``, see
    :mod:`nyx_cli.runtime._monitor`): a process of its own session, nyxd's child, spoken to
    over a ``SOCK_SEQPACKET`` socket pair; it exits when nyxd closes its end."""

    TIMEOUT = 30.0  # for its answer; one that takes longer is killed and replaced

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-S", "-I", MONITOR, "--server"],
                stdin=theirs.fileno(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd="/",
                start_new_session=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.sock = ours

    def fork(self) -> _ForkedMonitor:
        """A new monitor waiting for its command.

        :raises OSError: the server is gone, failed, or did not answer in time."""
        cmd_r, cmd_w = os.pipe()
        report_r, report_w = os.pipe()
        fds: list[int] = []
        try:
            socket.send_fds(self.sock, [b"fork"], [cmd_r, report_w])
            poller = select.poll()
            poller.register(self.sock.fileno(), select.POLLIN)
            if not poller.poll(int(self.TIMEOUT * 1000)):
                raise OSError(f"monitor fork server {self.proc.pid}: no answer")
            msg, fds, _, _ = socket.recv_fds(self.sock, 256, 1, socket.MSG_CMSG_CLOEXEC)
            if not msg.isdigit() or len(fds) != 1:
                why = msg.decode(errors="replace") or "gone"
                raise OSError(f"monitor fork server {self.proc.pid}: {why}")
        except BaseException:
            for fd in (cmd_w, report_r, *fds):
                os.close(fd)
            raise
        finally:
            os.close(cmd_r)  # the monitor's ends: its own now
            os.close(report_w)
        return _ForkedMonitor(int(msg), fds[0], open(cmd_w, "wb"), open(report_r, "rb"))

    def close(self, kill: bool = False) -> None:
        """Let it go (it exits on EOF; its monitors stay), or kill it; reaped either way."""
        self.sock.close()
        if kill:
            with contextlib.suppress(OSError):
                self.proc.kill()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _children() -> list[int]:
    """This process's children (those of all its threads)."""
    me = os.getpid()
    pids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{me}/task")
    except OSError:
        return pids
    for task in tasks:
        try:
            with open(f"/proc/{me}/task/{task}/children", "rb") as f:
                pids += [int(p) for p in f.read().split()]
        except FileNotFoundError:  # a kernel without CONFIG_PROC_CHILDREN: every process
            return [pid for pid, ppid in _parents() if ppid == me]
        except OSError:
            continue  # the thread ended meanwhile
    return pids


def _parents() -> list[tuple[int, int]]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _stat(int(name))
            if stat is not None:
                out.append((int(name), int(stat[2].split()[1])))
    return out


def _stat(pid: int) -> tuple[bytes, bytes, bytes] | None:
    """``/proc/PID/stat`` as (before the name, the name, after it): the name may hold
    spaces and parentheses."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    lp, rp = raw.find(b"("), raw.rfind(b")")
    return raw[:lp], raw[lp + 1 : rp], raw[rp + 1 :]


def reap_orphaned_monitors(keep: set[int] | frozenset[int] = frozenset()) -> list[int]:
    """Reap this process's children that are forked monitors which have exited (zombies
    named :data:`MONITOR_NAME`), except the pids in ``keep``; returns the pids reaped.

    Safe beside every other wait of nyxd: a monitor forked by the fork server is nobody's
    ``Popen`` (nyxd waits for it through a pidfd and takes the exit code from its status
    file, never from its wait status), and a monitor exec'd without a server keeps the
    interpreter's name."""
    reaped = []
    for pid in _children():
        if pid in keep:
            continue
        stat = _stat(pid)
        if stat is None or stat[1] != MONITOR_NAME or not stat[2].startswith(b" Z"):
            continue
        try:
            got, _status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue  # reaped meanwhile
        if got:
            reaped.append(pid)
    return reaped


def _spawn_monitor() -> subprocess.Popen[bytes]:
    """A monitor (an interpreter of its own) waiting for its command on stdin, in a session
    of its own (neither nyxd's death nor a signal to nyxd's process group reaches it)."""
    return subprocess.Popen(
        [sys.executable, "-S", "-I", MONITOR],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd="/",
        start_new_session=True,
    )


def _done(monitor: _Monitor) -> None:
    """A monitor that failed: its pipes closed, itself reaped (or waited for)."""
    for pipe in (monitor.stdin, monitor.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()
    monitor.wait()


def _read_line(monitor: _Monitor, timeout: float) -> str:
    """The monitor's one-line report (it closes its end after it)."""
    assert monitor.stdout is not None
    fd = monitor.stdout.fileno()
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(int(left * 1000)):
            raise subprocess.TimeoutExpired("runc run", timeout)
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    monitor.stdout.close()
    return data.decode(errors="replace").strip()


def _gone(stderr: str) -> bool:
    text = stderr.lower()
    return any(s in text for s in ("does not exist", "not exist", "not running", "no such"))


def _runc_error(log: Path) -> str:
    """The last error runc logged (JSON lines), or a generic line."""
    message = _NO_RUNC_ERROR
    try:
        for line in log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("level") in ("error", "fatal"):
                message = str(entry.get("msg", message))
    except OSError:
        pass
    return message
