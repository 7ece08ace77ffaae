"""The ``nyx`` client's light path: the hand parser of the hot commands reads every line it
accepts exactly as click does, the commands behave the same on both paths, and the common
command lines import neither click nor pydantic, nyx_core or the daemon (no timing here:
bench/bench_e2e.py measures the speed)."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from nyx_cli.client import _commands, _main, cli
from nyx_cli.client._http import Client, _query, default_socket, dumps, loads, q
from nyx_cli.daemon._api import ApiServer

SRC = Path(__file__).resolve().parents[3] / "nyx_cli" / "src"

# ------------------------------------------------------------------ the parser


def _click_reading(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> Any:
    """What the click group hands a command's body for ``args``, or None if it does not."""
    seen: list[tuple[str, str, dict[str, Any]]] = []
    for name in _main.COMMANDS:

        def record(socket: str, _name: str = name, **values: Any) -> None:
            seen.append((_name, socket, values))

        monkeypatch.setattr(_commands, name, record)
    try:
        cli.main(args=args, prog_name="nyx")
    except SystemExit:
        pass
    return seen[0] if seen else None


def _hand_reading(args: list[str]) -> Any:
    parsed = _main.parse(args)
    if parsed is None:
        return None
    cmd, socket, values = parsed
    name = next(n for n, c in _main.COMMANDS.items() if c is cmd)
    return (name, socket or default_socket(), values)


FAST_LINES = [
    ["run", "-d", "-p", "8080:80", "busybox:nyx", "httpd", "-f", "-p", "80"],
    ["run", "--detach", "--rm", "--name", "web", "--hostname=web", "--publish=1:2", "busybox"],
    ["run", "-e", "A=1", "--env", "B", "-l", "k=v", "--label=x=", "--network", "a", "img"],
    ["run", "--network", "a", "--network=b", "--network-alias", "w", "--dns-off", "img", "--"],
    ["run", "--entrypoint", "sh", "-w", "/tmp", "-u", "1:1", "img", "-c", "--help", "-d"],
    ["run", "--", "img", "sh"],
    ["run", "--network", "host", "--add-host", "a:1.2.3.4", "--add-host=b:host-gateway", "img"],
    ["run", "--ip", "10.88.0.9", "--mac-address=02:00:00:00:00:01", "--domainname", "x.y", "i"],
    ["run", "--dns", "1.1.1.1", "--dns-search=a.b", "--dns-option", "ndots:2", "--dns-off", "i"],
    ["run", "--expose", "80", "--expose=53/udp", "--sysctl", "net.a=1", "--sysctl=net.b=", "i"],
    ["run", "--network=container:db", "img"],
    ["run", "-v", "data:/data", "--volume=/srv:/srv:ro", "-v", "/anon", "img"],
    ["run", "--mount", "type=tmpfs,target=/t", "--tmpfs", "/run:size=1m,exec", "img"],
    ["run", "--cap-add", "NET_ADMIN", "--cap-drop=ALL", "--init", "--stop-signal", "QUIT", "i"],
    ["run", "--stop-timeout", "2.5", "--mount=type=bind,src=/x,dst=/y,ro", "img", "sh"],
    ["run", "img", "--", "sh"],
    ["run", "--name=", "img"],
    ["run", "-d", "--restart", "always", "--health-cmd", "true", "--health-interval=1m30s", "i"],
    ["run", "--health-timeout", "500ms", "--health-retries", "2", "--health-start-period=0", "i"],
    ["run", "--restart=on-failure:3", "--no-healthcheck", "img"],
    ["run", "--network=b", "--ip", "10.0.0.2", "-v", "d:/d", "--restart", "always", "--init", "i"],
    ["run", "--network=b", "--ip6", "fd00::2", "--ip=10.0.0.2", "i"],
    ["run", "--ip6=fd00::3", "--mac-address", "02:00:00:00:00:01", "img", "sh"],
    ["ps"],
    ["ps", "-a", "-q", "--json", "--filter", "label=a=b", "--filter=label=c"],
    ["ps", "--all", "--quiet", "--all"],
    ["stop", "web"],
    ["stop", "-t", "0", "a", "b"],
    ["stop", "a", "--time=1.5", "b"],
    ["stop", "--", "-t"],
    ["rm", "-f", "a", "b"],
    ["rm", "a", "--force"],
    ["logs", "-f", "web"],
    ["logs", "web", "--follow"],
    ["inspect", "a", "b"],
    ["wait", "web"],
    ["images"],
    ["images", "-q", "--json"],
    ["info", "--json"],
    ["rmi", "busybox:nyx"],
    ["--socket", "/tmp/s.sock", "ps"],
    ["--socket=/tmp/s.sock", "ps", "-a"],
    ["--socket", "", "ps"],
]

CLICK_LINES = [
    [],
    ["--help"],
    ["-h"],
    ["--version"],
    ["--socket"],
    ["--socket", "a", "--socket", "b", "ps"],
    ["--", "ps"],
    ["frobnicate"],
    ["load", "-i", "x"],
    ["pull", "alpine"],
    ["network", "ls"],
    ["compose", "ps"],
    ["ps", "--help"],
    ["ps", "-h"],
    ["ps", "extra"],
    ["ps", "-aq"],
    ["ps", "--filter"],
    ["ps", "--json=1"],
    ["ps", "--allx"],
    ["run"],
    ["run", "-d"],
    ["run", "-dp", "80:80", "img"],
    ["run", "-p80:80", "img"],
    ["run", "-p=80:80", "img"],
    ["run", "--name", "a", "--name", "b", "img"],
    ["run", "--name", "--rm", "img"],
    ["run", "--sysctl", "nokey", "img"],
    ["run", "--ip", "a", "--ip", "b", "img"],
    ["run", "--help", "img"],
    ["run", "-v", "a:b:c:d", "img"],
    ["run", "--mount", "type=nfs,target=/x", "img"],
    ["run", "--tmpfs", "/t:uid=1", "img"],
    ["run", "--stop-timeout", "soon", "img"],
    ["run", "--init=1", "img"],
    ["run", "--health-interval", "30", "img"],
    ["run", "--health-timeout", "1y", "img"],
    ["run", "--health-retries", "0", "img"],
    ["run", "--health-retries", "x", "img"],
    ["run", "--restart", "always", "--restart", "no", "img"],
    ["stop"],
    ["stop", "-t", "soon", "web"],
    ["stop", "-t", "1", "-t", "2", "web"],
    ["logs"],
    ["logs", "a", "b"],
    ["wait"],
    ["inspect"],
    ["rmi"],
]


@pytest.mark.parametrize("args", FAST_LINES, ids=" ".join)
def test_the_hand_parser_reads_the_common_lines_as_click_does(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    hand = _hand_reading(args)
    assert hand is not None, "this line should not need click"
    assert hand == _click_reading(monkeypatch, args)


@pytest.mark.parametrize("args", CLICK_LINES, ids=lambda a: " ".join(a) or "(none)")
def test_everything_else_is_left_to_click(args: list[str]) -> None:
    assert _main.parse(args) is None


def test_random_lines_are_read_as_click_reads_them_or_left_to_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    words = {
        name: [s for s in cmd.options] + ["x", "1.5", "a=b", "=b", "-", "--", "-h", "--help"]
        for name, cmd in _main.COMMANDS.items()
    }
    words["run"] += ["-dp", "--rm=1", "--name=n", "-p80", "img"]
    rng = random.Random(16)
    accepted = 0
    for _ in range(1500):
        name = rng.choice(sorted(_main.COMMANDS))
        args = [name, *(rng.choice(words[name]) for _ in range(rng.randrange(5)))]
        if rng.random() < 0.2:
            args = ["--socket", rng.choice(["s", "-x", ""]), *args]
        hand = _hand_reading(args)
        if hand is not None:
            accepted += 1
            assert hand == _click_reading(monkeypatch, args), args
    assert accepted > 300  # the comparison is not vacuous


def test_the_parser_table_mirrors_the_click_commands() -> None:
    kinds = {
        click.types.BoolParamType: _main.FLAG,
        click.types.StringParamType: _main.VALUE,
        click.types.FloatParamType: _main.FLOAT,
    }
    for name, cmd in _main.COMMANDS.items():
        command = cli.commands[name]
        options: dict[str, tuple[str, str]] = {}
        arguments = []
        for p in command.params:
            assert p.name is not None and p.envvar is None and p.callback is None
            if isinstance(p, click.Option):
                kind = kinds[type(p.type)]
                if p.multiple:
                    assert kind == _main.VALUE
                    kind = _main.MULTIPLE
                assert p.is_flag == (kind == _main.FLAG) and not p.prompt and not p.hidden
                options.update({o: (p.name, kind) for o in [*p.opts, *p.secondary_opts]})
            else:
                assert isinstance(
                    p.type, (click.types.StringParamType, click.types.UnprocessedParamType)
                )
                arguments.append((p.name, p.nargs, p.required))
        assert cmd.options == options, name
        assert cmd.arguments == tuple(arguments), name
        interspersed = command.context_settings.get("allow_interspersed_args", True)
        assert cmd.interspersed == interspersed, name
    assert {o for p in cli.params for o in p.opts} == {"--socket", "--version"}


# --------------------------------------------------------------- the commands


@pytest.fixture
def twins(tmp_path: Path, fake_sup: Any) -> Iterator[list[tuple[Path, Any]]]:
    """Two API servers with the same containers: one for each path of the client."""
    out, servers = [], []
    for side in ("a", "b"):
        sup = type(fake_sup)(tmp_path / side)
        sock = tmp_path / side / "nyxd.sock"
        server = ApiServer(sock, sup)
        server.start()
        servers.append(server)
        client = Client(sock)
        client.create({"image": "busybox:nyx", "name": "web", "ports": ["8080:80"]})
        client.create({"image": "busybox:nyx", "name": "old", "labels": {"k": "v"}})
        client.stop("old")
        out.append((sock, sup))
    try:
        yield out
    finally:
        for server in servers:
            server.close()


BEHAVIOUR_LINES = [
    ["ps"],
    ["ps", "-a"],
    ["ps", "-q", "-a"],
    ["ps", "--json"],
    ["ps", "-a", "--filter", "label=k=v"],
    ["run", "-d", "--name", "db", "-p", "9090:90", "-e", "A=1", "-l", "k=v", "busybox:nyx", "x"],
    ["run", "-d", "--network", "a", "--network", "b", "--dns-off", "busybox:nyx"],
    ["run", "-d", "alpine"],
    ["run", "-d", "-p", "80", "busybox:nyx"],
    ["run", "-d", "--name", "web", "busybox:nyx"],
    ["run", "-d", "-e", "=x", "busybox:nyx"],
    ["run", "-d", "--label", "=v", "busybox:nyx"],
    ["run", "-d", "--restart=always", "--health-cmd=true", "--health-retries=2", "busybox:nyx"],
    ["run", "-d", "--restart", "sometimes", "busybox:nyx"],
    ["run", "-d", "--health-interval", "30", "busybox:nyx"],
    ["run", "-d", "--no-healthcheck", "--health-cmd", "true", "busybox:nyx"],
    ["stop", "-t", "1", "web"],
    ["stop", "nope"],
    ["rm", "web"],
    ["rm", "-f", "web", "old"],
    ["logs", "web"],
    ["logs", "nope"],
    ["inspect", "web", "busybox:nyx"],
    ["inspect", "nope"],
    ["wait", "old"],
    ["images"],
    ["images", "-q"],
    ["images", "--json"],
    ["info"],
    ["info", "--json"],
    ["rmi", "busybox:nyx"],
    ["rmi", "nope"],
    ["ps", "--bogus"],
    ["stop"],
]


@pytest.mark.parametrize("args", BEHAVIOUR_LINES, ids=" ".join)
def test_both_paths_print_send_and_exit_the_same(
    twins: list[tuple[Path, Any]],
    capsys: pytest.CaptureFixture[str],
    args: list[str],
) -> None:
    (sock_a, sup_a), (sock_b, sup_b) = twins
    capsys.readouterr()
    try:
        _main.main(["--socket", str(sock_a), *args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    fast = capsys.readouterr()
    slow = CliRunner().invoke(cli, ["--socket", str(sock_b), *args], prog_name="nyx")
    assert slow.exception is None or isinstance(slow.exception, SystemExit)
    assert (code, fast.out, fast.err) == (slow.exit_code, slow.stdout, slow.stderr)
    assert sup_a.containers == sup_b.containers and sup_a.specs == sup_b.specs
    assert sup_a.stopped == sup_b.stopped


def test_an_interrupt_is_aborted_130_on_both_paths(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], api: Path
) -> None:
    def interrupted(socket: str, **values: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(_main.COMMANDS["ps"], "run", interrupted)
    monkeypatch.setattr(_commands, "ps", interrupted)
    with pytest.raises(SystemExit) as fast:
        _main.main(["--socket", str(api), "ps"])
    assert fast.value.code == 130 and capsys.readouterr().err == "\nnyx: aborted\n"
    slow = CliRunner().invoke(cli, ["--socket", str(api), "ps"])
    assert slow.exit_code == 130 and slow.stderr == "\nnyx: aborted\n"


@pytest.mark.parametrize(
    "text", ["plain", "\x1b[31mred\x1b[0m and \x1b[1;2mbold", "é ünï", "", None, 42]
)
def test_echo_writes_what_click_echo_writes(text: Any) -> None:
    for err in (False, True):
        ours, theirs = io.StringIO(), io.StringIO()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(sys, "stderr" if err else "stdout", ours)
            _commands.echo(text, err=err)
            mp.setattr(sys, "stderr" if err else "stdout", theirs)
            click.echo(text, err=err)
        assert ours.getvalue() == theirs.getvalue()


def test_a_closed_pipe_exits_1_quietly_on_both_paths(api: Path) -> None:
    for code in (
        "from nyx_cli.client import main; main(sys.argv[1:])",
        "from nyx_cli.client import main; main()",  # the console script: _leave
        "from nyx_cli.client import cli; cli.main(sys.argv[1:], prog_name='nyx')",
    ):
        r, w = os.pipe()
        os.close(r)
        proc = subprocess.run(
            [sys.executable, "-c", f"import sys; {code}", "--socket", str(api), "images"],
            stdout=w,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        os.close(w)
        assert (proc.returncode, proc.stderr) == (1, b""), code


def test_the_console_script_leaves_without_finalizing_and_loses_no_output(
    make_api: Any, tmp_path: Path
) -> None:
    """``main()`` (the console script) exits with ``os._exit`` once the command is done: an
    atexit handler never runs, and every line printed still arrives, pipe or file."""
    sock = make_api()
    code = (
        "import atexit, sys; atexit.register(lambda: print('finalized', file=sys.stderr)); "
        "from nyx_cli.client import main; main()"
    )
    argv = [sys.executable, "-c", code, "--socket", str(sock), "info"]
    piped = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert (piped.returncode, piped.stderr) == (0, "")
    with_finalization = subprocess.run(
        [sys.executable, "-c", code.replace("main()", "main(sys.argv[1:])"), *argv[3:]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert with_finalization.stderr == "finalized\n"  # the check above can fail
    assert piped.stdout == with_finalization.stdout and piped.stdout.count("\n") >= 2
    out = tmp_path / "out.txt"
    with out.open("w") as f:
        to_file = subprocess.run(argv, stdout=f, stderr=subprocess.PIPE, timeout=60)
    assert to_file.returncode == 0 and out.read_text() == piped.stdout


# ------------------------------------------------------------ what gets imported

HEAVY = ("click", "pydantic", "nyx_core", "nyx_cli.daemon", "nyx_cli.images", "loguru")
HEAVY_STDLIB = ("json", "socket", "typing", "re", "urllib", "pathlib", "threading", "http")

IMPORTS = r"""
import sys
from nyx_cli.client import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(" ".join(sorted(sys.modules)), file=sys.stderr)
"""


def _loaded(args: list[str]) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-c", IMPORTS, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "_NYX_COMPLETE"},
    )
    return set(proc.stderr.strip().splitlines()[-1].split())


def _top(modules: set[str], names: tuple[str, ...]) -> set[str]:
    return {m for m in modules if any(m == n or m.startswith(n + ".") for n in names)}


@pytest.mark.parametrize(
    "args",
    [
        ["run", "-d", "-p", "8080:80", "busybox:nyx", "httpd"],
        ["ps"],
        ["ps", "-a", "-q"],
        ["stop", "-t", "0", "web"],
        ["rm", "-f", "web"],
        ["logs", "web"],
        ["wait", "web"],
        ["images"],
        ["info"],
        ["rmi", "nope"],
        ["run", "-d", "alpine"],
        ["run", "-d", "-v", "data:/data", "--tmpfs", "/t:size=1m", "--init", "alpine"],
    ],
    ids=" ".join,
)
def test_common_lines_import_nothing_heavy(twins: list[tuple[Path, Any]], args: list[str]) -> None:
    loaded = _loaded(["--socket", str(twins[0][0]), *args])
    assert "nyx_cli.client._http" in loaded  # it ran
    assert _top(loaded, HEAVY) == set()
    assert _top(loaded, HEAVY_STDLIB) == set()


def test_json_output_imports_json_only(twins: list[tuple[Path, Any]]) -> None:
    loaded = _loaded(["--socket", str(twins[0][0]), "inspect", "web"])
    assert "json" in loaded and _top(loaded, HEAVY) == set()


def test_help_and_rare_commands_still_get_click(api: Path) -> None:
    assert "click" in _loaded(["ps", "--help"])
    assert "click" in _loaded(["--socket", str(api), "network", "ls"])


# ------------------------------------------------------------- the other user


@pytest.mark.skipif(os.geteuid() != 0, reason="runs the client as uid 65534")
def test_permission_problem_is_one_line_and_125(make_api: Any, open_socket_dir: Path) -> None:
    sock = make_api(sock=open_socket_dir / "nyxd.sock")  # 0660 root:root
    proc = subprocess.run(
        [
            "/usr/bin/python3",
            "-I",
            "-c",
            "import sys; sys.path.insert(0, sys.argv.pop(1)); "
            "from nyx_cli.client import main; main(sys.argv[1:])",
            str(SRC),
            "--socket",
            str(sock),
            "ps",
        ],
        user=65534,
        group=65534,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 125, proc.stderr
    assert proc.stderr == f"nyx: permission denied on {sock}: run as root or join group nyx\n"


# ------------------------------------------------------- the transport's pieces


@pytest.mark.parametrize(
    "value",
    [
        {"image": "busybox:nyx", "env": {"A": "é\x1b\u2603"}, "ports": ["8080:80"], "rm": False},
        [1, -2, 3.5, 1e300, 10**30, None, True, "", [], {}],
        "just a string",
    ],
)
def test_json_text_is_the_json_module_s(value: Any) -> None:
    assert dumps(value) == json.dumps(value)
    assert loads(json.dumps(value, indent=2).encode()) == value


@pytest.mark.parametrize("bad", [b"", b"  ", b"{", b'{"a": }', b"[1] [2]", b"nul", b"\xff"])
def test_bad_json_is_a_value_error(bad: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(bad)
    with pytest.raises(ValueError):
        loads(bad)


def test_bad_objects_are_a_type_error() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        dumps({"a": object()})


def test_quoting_is_urllib_s() -> None:
    for ref in ["web", "a/b c+d%e", "busybox:nyx", "é\u2603~_.-", "?&=#"]:
        assert q(ref) == urllib.parse.quote(ref, safe="")
    params = {"all": 1, "label": ["k=v", "a b", "x+y/é"], "timeout": 1.5, "q": "a b"}
    assert _query(params) == urllib.parse.urlencode(params, doseq=True)


@pytest.mark.parametrize("spelling", ["-socket", "-socket="])
def test_the_spec_s_single_dash_socket_flag(
    api: Path, capsys: pytest.CaptureFixture[str], spelling: str
) -> None:
    args = [spelling, str(api)] if spelling == "-socket" else [spelling + str(api)]
    _main.main([*args, "info"])  # the hand path
    assert "driver: fake" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        _main.main([*args, "info", "--help"])  # click's path
    assert exc.value.code == 0 and "Show nyxd's version" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args", [[], ["--help"], ["--version"], *([c, "-h"] for c in sorted(cli.commands))]
)
def test_help_and_version_are_click_s(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _main.main(args)
    out = capsys.readouterr()
    with pytest.raises(SystemExit) as slow_exc:
        cli.main(args=args, prog_name="nyx")
    slow = capsys.readouterr()
    assert (exc.value.code, out.out, out.err) == (slow_exc.value.code, slow.out, slow.err)
    if args:
        assert exc.value.code == 0 and out.out.startswith(
            "nyx" if "--version" in args else "Usage: nyx"
        )
    else:  # no command: the group's help as a usage error
        assert exc.value.code == 125 and "Usage: nyx" in out.err
