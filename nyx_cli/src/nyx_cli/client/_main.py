"""``nyx``'s entry point: the common command lines without importing click.

Importing click costs more than the rest of a ``nyx ps`` (interpreter start, the request and
the table together), so the hot commands' usual lines are parsed here, by a parser that
accepts a strict subset of what click accepts and reads it the way click does: options
spelled exactly (``-p VALUE``, ``--publish VALUE``, ``--publish=VALUE``, flags alone),
arguments where click puts them, ``--`` ending the options. Anything else (``-h``/
``--help``, ``--version``, a bundled ``-dp``, an attached ``-p80``, a value that looks like
an option, a repeated single-value option, a missing or extra argument, a bad number, an
unknown command or option, shell completion, a bad ``-e``/``--label``) goes to the click
group in ``_cli`` untouched, so help, usage errors and their exit codes are click's.

``COMMANDS`` mirrors the click commands' parameters; a unit test compares the two.
"""

from __future__ import annotations

import errno
import os
import sys

from .._argv import normalize_argv
from . import _commands
from ._http import default_socket

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TextIO

__all__ = ["COMMANDS", "Command", "main", "parse"]

FLAG, VALUE, MULTIPLE, FLOAT = "flag", "value", "multiple", "float"


class Command:
    """One click command as the hand parser sees it.

    ``options`` maps every spelling (``-p``, ``--publish``) to ``(parameter, kind)``;
    ``arguments`` are ``(parameter, nargs, required)`` in click's order (nargs 1, or -1 for
    "the rest", last); ``interspersed`` is click's ``allow_interspersed_args``;
    ``convert`` turns a parameter's strings into the value the command takes, as the click
    command does (a :class:`_commands.BadValue` leaves the line to click).
    """

    def __init__(
        self,
        run: Callable[..., Any],
        options: tuple[tuple[str, str, tuple[str, ...]], ...] = (),
        arguments: tuple[tuple[str, int, bool], ...] = (),
        interspersed: bool = True,
        convert: dict[str, Callable[[Any], Any]] | None = None,
    ) -> None:
        self.run = run
        self.convert = convert or {}
        self.options = {
            spelling: (dest, kind) for kind, dest, names in options for spelling in names
        }
        self.defaults: dict[str, Any] = {
            dest: False if kind == FLAG else () if kind == MULTIPLE else None
            for kind, dest, _ in options
        }
        self.arguments = arguments
        self.interspersed = interspersed


COMMANDS: dict[str, Command] = {
    "run": Command(
        _commands.run,
        (
            (FLAG, "detach", ("-d", "--detach")),
            (FLAG, "rm", ("--rm",)),
            (VALUE, "name", ("--name",)),
            (VALUE, "hostname", ("--hostname",)),
            (MULTIPLE, "publish", ("-p", "--publish")),
            (MULTIPLE, "env", ("-e", "--env")),
            (MULTIPLE, "networks", ("--network",)),
            (MULTIPLE, "aliases", ("--network-alias",)),
            (FLAG, "dns_off", ("--dns-off",)),
            (MULTIPLE, "labels", ("-l", "--label")),
            (VALUE, "entrypoint", ("--entrypoint",)),
            (VALUE, "workdir", ("-w", "--workdir")),
            (VALUE, "user", ("-u", "--user")),
            (VALUE, "ip", ("--ip",)),
            (VALUE, "ip6", ("--ip6",)),
            (VALUE, "mac_address", ("--mac-address",)),
            (MULTIPLE, "add_hosts", ("--add-host",)),
            (MULTIPLE, "dns", ("--dns",)),
            (MULTIPLE, "dns_search", ("--dns-search",)),
            (MULTIPLE, "dns_options", ("--dns-option",)),
            (VALUE, "domainname", ("--domainname",)),
            (MULTIPLE, "expose", ("--expose",)),
            (MULTIPLE, "sysctls", ("--sysctl",)),
            (MULTIPLE, "volumes", ("-v", "--volume")),
            (MULTIPLE, "mounts", ("--mount",)),
            (MULTIPLE, "tmpfs", ("--tmpfs",)),
            (MULTIPLE, "env_files", ("--env-file",)),
            (MULTIPLE, "cap_add", ("--cap-add",)),
            (MULTIPLE, "cap_drop", ("--cap-drop",)),
            (FLAG, "init", ("--init",)),
            (VALUE, "stop_signal", ("--stop-signal",)),
            (FLOAT, "stop_timeout", ("--stop-timeout",)),
            (VALUE, "restart", ("--restart",)),
            (VALUE, "health_cmd", ("--health-cmd",)),
            (VALUE, "health_interval", ("--health-interval",)),
            (VALUE, "health_timeout", ("--health-timeout",)),
            (VALUE, "health_retries", ("--health-retries",)),
            (VALUE, "health_start_period", ("--health-start-period",)),
            (FLAG, "no_healthcheck", ("--no-healthcheck",)),
        ),
        (("image", 1, True), ("command", -1, False)),
        interspersed=False,
        convert={
            "env": _commands.env_pairs,
            "labels": _commands.label_pairs,
            "sysctls": _commands.sysctl_pairs,
            "volumes": _commands.volume_specs,
            "mounts": _commands.mount_specs,
            "tmpfs": _commands.tmpfs_specs,
            "env_files": _commands.env_file_pairs,
            "health_interval": lambda v: _commands.duration(v, "--health-interval"),
            "health_timeout": lambda v: _commands.duration(v, "--health-timeout"),
            "health_retries": lambda v: _commands.count(v, "--health-retries"),
            "health_start_period": lambda v: _commands.duration(v, "--health-start-period"),
        },
    ),
    "ps": Command(
        _commands.ps,
        (
            (FLAG, "all_", ("-a", "--all")),
            (FLAG, "quiet", ("-q", "--quiet")),
            (FLAG, "as_json", ("--json",)),
            (MULTIPLE, "filters", ("--filter",)),
        ),
    ),
    "stop": Command(
        _commands.stop,
        ((FLOAT, "timeout", ("-t", "--time")),),
        (("containers", -1, True),),
    ),
    "rm": Command(
        _commands.rm,
        ((FLAG, "force", ("-f", "--force")),),
        (("containers", -1, True),),
    ),
    "logs": Command(
        _commands.logs,
        ((FLAG, "follow", ("-f", "--follow")),),
        (("container", 1, True),),
    ),
    "inspect": Command(_commands.inspect, (), (("refs", -1, True),)),
    "wait": Command(_commands.wait, (), (("container", 1, True),)),
    "images": Command(
        _commands.images,
        ((FLAG, "quiet", ("-q", "--quiet")), (FLAG, "as_json", ("--json",))),
    ),
    "info": Command(_commands.info, ((FLAG, "as_json", ("--json",)),)),
    "rmi": Command(_commands.rmi, (), (("refs", -1, True),)),
}


def _options(cmd: Command, args: list[str]) -> tuple[dict[str, Any], list[str]] | None:
    """Options and the words left for the arguments, or None when click must decide."""
    values = dict(cmd.defaults)
    seen: set[str] = set()
    words: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            words.extend(args[i:])
            break
        if arg[:1] != "-" or len(arg) == 1:
            if not cmd.interspersed:
                words.extend(args[i - 1 :])
                break
            words.append(arg)
            continue
        spelling, eq, value = arg.partition("=") if arg[:2] == "--" else (arg, "", "")
        known = cmd.options.get(spelling)
        if known is None:
            return None
        dest, kind = known
        if kind == FLAG:
            if eq:
                return None
            values[dest] = True
            continue
        if not eq:
            if i >= len(args) or (args[i][:1] == "-" and len(args[i]) > 1):
                return None
            value = args[i]
            i += 1
        if kind == MULTIPLE:
            values[dest] = (*values[dest], value)
            continue
        if dest in seen:
            return None
        seen.add(dest)
        if kind == FLOAT:
            try:
                values[dest] = float(value)
            except ValueError:
                return None
        else:
            values[dest] = value
    return values, words


def _arguments(cmd: Command, words: list[str], values: dict[str, Any]) -> bool:
    for name, nargs, required in cmd.arguments:
        if nargs == 1:
            if not words:
                return False
            values[name] = words.pop(0)
        else:  # the rest
            if required and not words:
                return False
            values[name] = tuple(words)
            words = []
    return not words


def parse(args: list[str]) -> tuple[Command, str | None, dict[str, Any]] | None:
    """``(command, --socket value, parameters)`` for a line the hand parser fully reads."""
    socket: str | None = None
    i = 0
    while i < len(args) and args[i][:8] == "--socket":
        if socket is not None:
            return None
        if args[i] == "--socket" and i + 1 < len(args):
            socket = args[i + 1]
            i += 2
        elif args[i][:9] == "--socket=":
            socket = args[i][9:]
            i += 1
        else:
            return None
    if i >= len(args) or args[i] not in COMMANDS:
        return None  # no command, a group option, an unknown or a click-only command
    cmd = COMMANDS[args[i]]
    parsed = _options(cmd, args[i + 1 :])
    if parsed is None:
        return None
    values, words = parsed
    if not _arguments(cmd, words, values):
        return None
    try:
        for name, convert in cmd.convert.items():
            values[name] = convert(values[name])
    except _commands.BadValue:
        return None
    return cmd, socket, values


class _Pacified:
    """click's ``_PacifyFlushWrapper``: a stream whose flush ignores a closed pipe."""

    def __init__(self, wrapped: TextIO) -> None:
        self.wrapped = wrapped

    def flush(self) -> None:
        try:
            self.wrapped.flush()
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.wrapped, attr)


def _click(args: list[str]) -> None:
    from ._cli import cli

    cli.main(args=args, prog_name="nyx")


def main(argv: list[str] | None = None) -> None:
    """Run one ``nyx`` command line (``sys.argv[1:]`` by default); exits like click's group."""
    args = sys.argv[1:] if argv is None else list(argv)
    # the spec's single-dash spelling for the one global long option, before the command
    if args and (args[0] == "-socket" or args[0].startswith("-socket=")):
        args = normalize_argv(args[:1], ["socket"]) + args[1:]
    parsed = None if os.environ.get("_NYX_COMPLETE") else parse(args)
    if parsed is None:
        _click(args)
        return
    cmd, socket, values = parsed
    try:
        rv = cmd.run(socket or default_socket(), **values)
    except (EOFError, KeyboardInterrupt):
        _commands.echo(err=True)  # what click does, then the group's "aborted"
        _commands.die("aborted", 130)
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise
        sys.stdout = _Pacified(sys.stdout)
        sys.stderr = _Pacified(sys.stderr)
        raise SystemExit(1) from None
    if argv is None:  # the console script
        _leave(rv if isinstance(rv, int) else 0)
    if isinstance(rv, int):
        raise SystemExit(rv)


def _leave(code: int) -> None:
    """Exit at once with ``code``, what was printed flushed, skipping the interpreter's
    finalization (module teardown, a last collection: ~2-3 ms of a ~75 ms ``nyx run -d``).
    Nothing on the light path needs it: no threads, no atexit handlers, the socket closed.
    Returns when a flush fails: the normal exit then reports it as before."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(code)
