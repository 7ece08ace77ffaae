"""What the ``nyx`` commands do, without click: one module both entry paths call.

``_cli`` (the click commands: parsing, help, usage errors) and ``_main`` (the hand parser of
the hot commands) both end here with the parsed values, so a command behaves the same
whichever path parsed it. Nothing here imports click, json or anything heavy at import
time: the ``nyx`` process should cost the interpreter's start and one request.

Exit codes follow docker's: 125 when nyxd or the request fails (or bad usage), 126 when the
container's command cannot be executed, 127 when it is not found, otherwise the
container's own exit code (``nyx run`` without ``-d``).
"""

from __future__ import annotations

import os
import sys

from ._http import ApiError, Client, DaemonUnavailable, q

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, NoReturn, TextIO

__all__ = [
    "EXIT_DAEMON",
    "BadValue",
    "call",
    "die",
    "echo",
    "env_pairs",
    "images",
    "info",
    "inspect",
    "label_pairs",
    "logs",
    "ps",
    "rm",
    "rmi",
    "run",
    "short",
    "size",
    "stop",
    "table",
    "wait",
]

EXIT_DAEMON = 125

_ANSI = r"\033\[[0-?]*[ -/]*[@-~]"  # click's strip_ansi pattern


class BadValue(Exception):
    """An option value that cannot be converted (``env_pairs``, ``label_pairs``).

    The click commands turn it into ``click.BadParameter`` (a usage error, exit 125); the
    hand parser hands the whole command line to click, which reports it the same way.
    """

    def __init__(self, message: str, param_hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.param_hint = param_hint


def _stream(err: bool) -> TextIO | None:
    return sys.stderr if err else sys.stdout


def echo(message: object = None, err: bool = False, nl: bool = True) -> None:
    """``click.echo`` for text: the same characters on the same stream, flushed.

    As click does: ``None`` prints an empty line, ANSI escapes are stripped when the stream
    is not a terminal, and a stream whose encoding is ASCII gets UTF-8 (errors replaced).
    """
    stream = _stream(err)
    if stream is None:
        return
    out = "" if message is None else message if isinstance(message, str) else str(message)
    if nl:
        out += "\n"
    if not out:
        stream.flush()
        return
    if "\x1b" in out:
        try:
            tty = stream.isatty()
        except Exception:
            tty = False
        if not tty:
            import re

            out = re.sub(_ANSI, "", out)
    buffer = getattr(stream, "buffer", None)
    if buffer is not None and _is_ascii(getattr(stream, "encoding", None) or "ascii"):
        stream.flush()
        buffer.write(out.encode("utf-8", "replace"))
        buffer.flush()
        return
    stream.write(out)
    stream.flush()


def _is_ascii(encoding: str) -> bool:
    import codecs  # already loaded by the interpreter's start

    try:
        return codecs.lookup(encoding).name == "ascii"
    except LookupError:
        return False


def die(message: str, code: int = EXIT_DAEMON) -> NoReturn:
    echo(f"nyx: {message}", err=True)
    raise SystemExit(code)


def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run one client call; a daemon or API error becomes one line and exit 125."""
    try:
        return fn(*args, **kwargs)
    except DaemonUnavailable as exc:
        die(str(exc))
    except ApiError as exc:
        code = exc.body.get("exit_code")
        die(str(exc), code if isinstance(code, int) else EXIT_DAEMON)


def short(cid: str | None) -> str:
    return (cid or "")[:12]


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    echo("\n".join(lines))


def size(n: Any) -> str:
    if not isinstance(n, int):
        return "?"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1000
    return f"{n}B"


def _pretty(obj: Any) -> str:
    import json  # only for the commands that print JSON

    return json.dumps(obj, indent=2)


# ---------------------------------------------------------------------------- run


def env_pairs(values: Sequence[str]) -> dict[str, str]:
    """``-e NAME=VALUE`` (or ``-e NAME``: its value here, if it has one) as a dict."""
    env: dict[str, str] = {}
    for item in values:
        k, sep, v = item.partition("=")
        if not k:
            raise BadValue(f"{item!r}: expected NAME=VALUE", "-e")
        if not sep:
            if k not in os.environ:
                continue
            v = os.environ[k]
        env[k] = v
    return env


def label_pairs(values: Sequence[str]) -> dict[str, str]:
    """``--label KEY=VALUE`` as a dict."""
    out = {}
    for item in values:
        k, _, v = item.partition("=")
        if not k:
            raise BadValue(f"{item!r}: expected KEY=VALUE", "--label")
        out[k] = v
    return out


def run(
    socket: str,
    *,
    detach: bool,
    rm: bool,
    name: str | None,
    hostname: str | None,
    publish: Sequence[str],
    env: dict[str, str],
    networks: Sequence[str],
    aliases: Sequence[str],
    dns_off: bool,
    labels: dict[str, str],
    entrypoint: str | None,
    workdir: str | None,
    user: str | None,
    image: str,
    command: Sequence[str],
) -> int:
    """Run a container: print its JSON, stream its output, exit with its exit code."""
    ports = list(publish)  # nyxd parses "[IP:]HOST:CTR[/PROTO]" and names a bad value
    spec: dict[str, Any] = {
        "image": image,
        "name": name,
        "hostname": hostname,
        "command": list(command) or None,
        "entrypoint": [entrypoint] if entrypoint is not None else None,
        "env": env,
        "workdir": workdir,
        "user": user,
        "ports": ports,
        "aliases": list(aliases),
        "labels": labels,
        "rm": rm,
    }
    if len(networks) == 1:
        spec["network"] = networks[0]
    elif networks:
        spec["networks"] = [{"name": n} for n in networks]
    if dns_off:
        spec["dns"] = False
    spec = {k: v for k, v in spec.items() if v is not None}
    client = Client(socket)
    if detach:
        created = call(client.create, spec, True)
        echo(created["id"])
        return 0
    return _run_foreground(client, spec, rm)


def _run_foreground(client: Client, spec: dict[str, Any], rm: bool) -> int:
    import contextlib
    import signal
    import threading

    created = call(client.create, spec, False)
    cid = created["id"]
    printed = threading.Event()
    out = sys.stdout.buffer

    def pump() -> None:
        printed.wait()
        try:
            for chunk in client.stream(
                "GET", f"/v1/containers/{q(cid)}/logs", params={"follow": 1}
            ):
                out.write(chunk)
                out.flush()
        except Exception:
            return

    logs = threading.Thread(target=pump, daemon=True)
    logs.start()
    try:
        started = client.start(cid)
    except (ApiError, DaemonUnavailable) as exc:
        if rm:
            with contextlib.suppress(Exception):
                client.request("DELETE", f"/v1/containers/{q(cid)}", params={"force": 1})
        code = exc.body.get("exit_code") if isinstance(exc, ApiError) else None
        die(str(exc), code if isinstance(code, int) else EXIT_DAEMON)
    echo(_pretty(started))
    sys.stdout.flush()
    printed.set()

    stopping = threading.Event()

    def quiet_stop() -> None:
        with contextlib.suppress(Exception):
            client.stop(cid)

    def on_signal(signum: int, frame: Any) -> None:
        if stopping.is_set():
            return
        stopping.set()
        echo(f"nyx: stopping {short(cid)}", err=True)
        threading.Thread(target=quiet_stop, daemon=True).start()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = call(client.wait, cid)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    logs.join(5)
    code = result.get("exit_code")
    return code if isinstance(code, int) else (137 if stopping.is_set() else 1)


# ----------------------------------------------------------------------- containers


def ps(socket: str, *, all_: bool, quiet: bool, as_json: bool, filters: Sequence[str]) -> None:
    """List containers."""
    labels = [f.removeprefix("label=") for f in filters]
    rows = call(
        Client(socket).request,
        "GET",
        "/v1/containers",
        params={"all": 1 if all_ else None, "label": labels or None},
    )
    if as_json:
        echo(_pretty(rows))
        return
    if quiet:
        if rows:
            echo("\n".join(short(r["id"]) for r in rows))
        return
    table(
        [
            (
                short(r["id"]),
                r["name"],
                r["image"],
                r["state"] + (f" ({r['exit_code']})" if r.get("exit_code") is not None else ""),
                ",".join(r.get("ips") or []),
                ",".join(r.get("ports") or []),
            )
            for r in rows
        ],
        ("CONTAINER ID", "NAME", "IMAGE", "STATE", "IPS", "PORTS"),
    )


def stop(socket: str, *, timeout: float | None, containers: Sequence[str]) -> None:
    """Stop containers: SIGTERM, grace period, SIGKILL."""
    client = Client(socket)
    for ref in containers:
        call(client.stop, ref, timeout)
        echo(ref)


def rm(socket: str, *, force: bool, containers: Sequence[str]) -> None:
    """Remove containers."""
    client = Client(socket)
    for ref in containers:
        call(
            client.request,
            "DELETE",
            f"/v1/containers/{q(ref)}",
            params={"force": 1 if force else None},
        )
        echo(ref)


def logs(socket: str, *, follow: bool, container: str) -> None:
    """Print a container's output."""
    client = Client(socket)
    out = sys.stdout.buffer
    stream = call(
        client.stream,
        "GET",
        f"/v1/containers/{q(container)}/logs",
        params={"follow": 1 if follow else None},
    )
    try:
        for chunk in stream:
            out.write(chunk)
            out.flush()
    except KeyboardInterrupt:
        return
    except (DaemonUnavailable, ApiError) as exc:
        die(str(exc))


def inspect(socket: str, *, refs: Sequence[str]) -> None:
    """Show containers (or images) as JSON."""
    client = Client(socket)
    found = []
    for ref in refs:
        try:
            found.append(client.request("GET", f"/v1/containers/{q(ref)}"))
            continue
        except ApiError as exc:
            if exc.status != 404:
                die(str(exc))
        except DaemonUnavailable as exc:
            die(str(exc))
        images = call(client.request, "GET", "/v1/images")
        match = [
            i
            for i in images
            if ref in (i.get("repo_tags") or []) or str(i.get("id", "")).startswith(ref)
        ]
        if not match:
            die(f"no such container or image: {ref}", 1)
        found.append(match[0])
    echo(_pretty(found))


def wait(socket: str, *, container: str) -> int:
    """Wait for a container to exit; print its exit code."""
    result = call(Client(socket).wait, container)
    echo(result.get("exit_code"))
    return 0


# ---------------------------------------------------------------------------- images


def images(socket: str, *, quiet: bool, as_json: bool) -> None:
    """List images."""
    rows = call(Client(socket).request, "GET", "/v1/images")
    if as_json:
        echo(_pretty(rows))
        return
    found = []
    for img in rows:
        ident = str(img.get("id") or "").removeprefix("sha256:")[:12]
        if quiet:
            echo(ident)
            continue
        for tag in img.get("repo_tags") or ["<none>:<none>"]:
            repo, _, t = tag.rpartition(":")
            found.append((repo or tag, t, ident, size(img.get("size"))))
    if not quiet:
        table(found, ("REPOSITORY", "TAG", "IMAGE ID", "SIZE"))


def rmi(socket: str, *, refs: Sequence[str]) -> None:
    """Remove images."""
    client = Client(socket)
    for ref in refs:
        call(client.request, "DELETE", f"/v1/images/{q(ref)}")
        echo(f"Untagged: {ref}")


def info(socket: str, *, as_json: bool) -> None:
    """Show nyxd's version, driver, DNS mode and plugins."""
    data = call(Client(socket).info)
    if as_json:
        echo(_pretty(data))
        return
    for key in (
        "version",
        "driver",
        "dns",
        "dns_provider",
        "subnet",
        "gateway",
        "subnet6",
        "gateway6",
    ):
        if data.get(key) is not None:
            echo(f"{key}: {data[key]}")
    echo(f"containers: {data.get('containers')} (running {data.get('running', '?')})")
    echo(f"images: {data.get('images')}")
    echo("plugins:")
    for p in data.get("plugins", []):
        echo(f"  {p['group']:<18} {p['name']:<10} {p['distribution']} {p['version']}")
