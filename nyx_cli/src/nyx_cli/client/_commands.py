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
from ._options import (
    NETWORK_MODES,
    BadValue,
    count,
    duration,
    env_file_pairs,
    env_pairs,
    label_pairs,
    mount_specs,
    sysctl_pairs,
    tmpfs_specs,
    volume_specs,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, NoReturn, TextIO

__all__ = [
    "EXIT_DAEMON",
    "BadValue",
    "call",
    "count",
    "die",
    "duration",
    "echo",
    "env_file_pairs",
    "env_pairs",
    "images",
    "info",
    "inspect",
    "label_pairs",
    "logs",
    "mount_specs",
    "ps",
    "rm",
    "rmi",
    "run",
    "short",
    "size",
    "status",
    "stop",
    "sysctl_pairs",
    "table",
    "tmpfs_specs",
    "volume_specs",
    "wait",
]

EXIT_DAEMON = 125

_ANSI = r"\033\[[0-?]*[ -/]*[@-~]"  # click's strip_ansi pattern


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


def _make_bind_sources(mounts: list[dict[str, Any]]) -> None:
    """``-v /host/dir:...`` makes a missing host directory, as docker does; ``--mount``
    does not (nyxd refuses a missing source)."""
    for m in mounts:
        if m.pop("_create", False) and not os.path.lexists(m["source"]):
            try:
                os.makedirs(m["source"], exist_ok=True)
            except OSError as exc:
                die(f"-v {m['source']}: cannot create the host directory: {exc}")


def _healthcheck(
    cmd: str | None,
    interval: float | None,
    timeout: float | None,
    retries: int | None,
    start_period: float | None,
    off: bool,
) -> dict[str, Any] | None:
    """The spec's ``healthcheck`` from docker's ``--health-*`` flags (``None``: the image's)."""
    given: dict[str, Any] = {
        "interval": interval,
        "timeout": timeout,
        "retries": retries,
        "start_period": start_period,
    }
    given = {k: v for k, v in given.items() if v is not None}
    if off:
        if cmd is not None or given:
            die("--no-healthcheck conflicts with the --health-* options")
        return {"test": ["NONE"]}
    if cmd is not None:
        given["test"] = ["CMD-SHELL", cmd]
    return given or None


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
    restart: str | None = None,
    health_cmd: str | None = None,
    health_interval: float | None = None,
    health_timeout: float | None = None,
    health_retries: int | None = None,
    health_start_period: float | None = None,
    no_healthcheck: bool = False,
    image: str,
    command: Sequence[str],
    ip: str | None = None,
    ip6: str | None = None,
    mac_address: str | None = None,
    add_hosts: Sequence[str] = (),
    dns: Sequence[str] = (),
    dns_search: Sequence[str] = (),
    dns_options: Sequence[str] = (),
    domainname: str | None = None,
    expose: Sequence[str] = (),
    sysctls: dict[str, str] | None = None,
    volumes: Sequence[dict[str, Any]] = (),
    mounts: Sequence[dict[str, Any]] = (),
    tmpfs: Sequence[dict[str, Any]] = (),
    env_files: dict[str, str] | None = None,
    cap_add: Sequence[str] = (),
    cap_drop: Sequence[str] = (),
    init: bool = False,
    stop_signal: str | None = None,
    stop_timeout: float | None = None,
) -> int:
    """Run a container: print its JSON, stream its output, exit with its exit code."""
    ports = list(publish)  # nyxd parses "[IP:]HOST:CTR[/PROTO]" and names a bad value
    all_mounts = [dict(m) for m in (*volumes, *mounts, *tmpfs)]
    _make_bind_sources(all_mounts)
    spec: dict[str, Any] = {
        "image": image,
        "name": name,
        "hostname": hostname,
        "command": list(command) or None,
        "entrypoint": [entrypoint] if entrypoint is not None else None,
        "env": {**(env_files or {}), **env},
        "workdir": workdir,
        "user": user,
        "ports": ports,
        "aliases": list(aliases),
        "labels": labels,
        "rm": rm,
        "mounts": all_mounts or None,
        "cap_add": list(cap_add) or None,
        "cap_drop": list(cap_drop) or None,
        "init": init or None,
        "stop_signal": stop_signal,
        "stop_timeout": stop_timeout,
        "restart": restart,
        "healthcheck": _healthcheck(
            health_cmd,
            health_interval,
            health_timeout,
            health_retries,
            health_start_period,
            no_healthcheck,
        ),
    }
    given: dict[str, Any] = {  # nyxd validates these and names the field and the value
        "ipv4_address": ip,
        "ipv6_address": ip6,
        "mac_address": mac_address,
        "extra_hosts": list(add_hosts),
        "dns_servers": list(dns),
        "dns_search": list(dns_search),
        "dns_options": list(dns_options),
        "domainname": domainname,
        "expose": list(expose),
        "sysctls": dict(sysctls or {}),
    }
    spec.update({k: v for k, v in given.items() if v})
    modes = [n for n in networks if n in NETWORK_MODES or n.startswith("container:")]
    if modes and len(networks) > 1:
        die(f"--network {modes[0]}: a network mode cannot be combined with other --network")
    if modes:
        spec["network_mode"] = modes[0]
    elif len(networks) == 1:
        spec["network"] = networks[0]
    elif networks:
        if ip is not None or ip6 is not None or mac_address is not None:
            die("--ip/--ip6/--mac-address: give one --network (the one they are for), not several")
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
    attached = threading.Event()
    out = sys.stdout.buffer

    def pump() -> None:
        # attached before the start (the answer's headers mean nyxd holds the log open):
        # a container that prints and ends at once, --rm or not, loses no output
        try:
            chunks = client.stream("GET", f"/v1/containers/{q(cid)}/logs", params={"follow": 1})
        except Exception:
            return
        finally:
            attached.set()
        printed.wait()  # the start's answer is printed first; output waits in the socket
        try:
            for chunk in chunks:
                out.write(chunk)
                out.flush()
        except Exception:
            return

    logs = threading.Thread(target=pump, daemon=True)
    logs.start()
    attached.wait(10)

    # ^C or SIGTERM from here on stops the container (what docker's sig-proxy does):
    # the handler is in place before the start, since the process may print and the
    # user may interrupt before the start's answer comes back. Handlers run in the
    # main thread, between its bytecodes, so plain flags are enough.
    stopping = threading.Event()
    sent = {"started": False, "stop": False}

    def quiet_stop() -> None:
        with contextlib.suppress(Exception):
            client.stop(cid)

    def send_stop() -> None:
        if not sent["stop"]:
            sent["stop"] = True
            threading.Thread(target=quiet_stop, daemon=True).start()

    def on_signal(signum: int, frame: Any) -> None:
        if stopping.is_set():
            return
        stopping.set()
        echo(f"nyx: stopping {short(cid)}", err=True)
        if sent["started"]:
            send_stop()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _attach(client, cid, rm, printed, logs, stopping, sent, send_stop)
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _attach(
    client: Client,
    cid: str,
    rm: bool,
    printed: Any,
    logs: Any,
    stopping: Any,
    sent: dict[str, bool],
    send_stop: Any,
) -> int:
    """Start the created container ``cid`` and wait for it, its output streaming."""
    import contextlib

    try:
        started = client.start(cid)
    except (ApiError, DaemonUnavailable) as exc:
        if rm:
            with contextlib.suppress(Exception):
                client.request("DELETE", f"/v1/containers/{q(cid)}", params={"force": 1})
        code = exc.body.get("exit_code") if isinstance(exc, ApiError) else None
        die(str(exc), code if isinstance(code, int) else EXIT_DAEMON)
    sent["started"] = True
    if stopping.is_set():  # interrupted while it was starting
        send_stop()
    echo(_pretty(started))
    sys.stdout.flush()
    printed.set()
    result = call(client.wait, cid)
    if result.get("state") != "restarting":  # otherwise its output goes on: stop here
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
                status(r),
                str(r.get("restart_count") or 0),
                ",".join(r.get("ips") or []),
                ",".join([*(r.get("ports") or []), *(r.get("expose") or [])]),
            )
            for r in rows
        ],
        ("CONTAINER ID", "NAME", "IMAGE", "STATUS", "RESTARTS", "IPS", "PORTS"),
    )


def _ago(when: Any) -> float | None:
    """Seconds since the API time ``when`` (ISO 8601), ``None`` when it is not one."""
    from datetime import UTC, datetime  # only for the commands that show times

    if not isinstance(when, str):
        return None
    try:
        then = datetime.fromisoformat(when)
    except ValueError:
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - then).total_seconds())


def human_duration(seconds: float) -> str:
    """docker's ``units.HumanDuration``: "Less than a second", "3 seconds", "About an hour"."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def status(c: dict[str, Any]) -> str:
    """docker's STATUS: ``Up 3 seconds (healthy)``, ``Exited (1) 5 seconds ago``,
    ``Restarting (1) Less than a second ago``, ``Created``."""
    state = str(c.get("state", ""))
    if state == "running":
        up = _ago(c.get("started"))
        text = "Up" + (f" {human_duration(up)}" if up is not None else "")
        health = c.get("health")
        if isinstance(health, dict) and health.get("status"):
            word = health["status"]
            text += f" (health: {word})" if word == "starting" else f" ({word})"
        return text
    if state in ("exited", "stopped", "restarting"):
        code = c.get("exit_code")
        text = state.capitalize() + (f" ({code})" if code is not None else "")
        ago = _ago(c.get("finished"))
        return text + (f" {human_duration(ago)} ago" if ago is not None else "")
    return state.capitalize()


PARALLEL = 8
"""Containers ``stop`` and ``rm`` act on at once (each a request of its own, as docker's)."""


def _attempt(fn: Any, *args: Any, **kwargs: Any) -> tuple[str, int] | None:
    """:func:`call` that returns the failure (message, exit code) instead of exiting."""
    try:
        fn(*args, **kwargs)
    except DaemonUnavailable as exc:
        return str(exc), EXIT_DAEMON
    except ApiError as exc:
        code = exc.body.get("exit_code")
        return str(exc), code if isinstance(code, int) else EXIT_DAEMON
    return None


def _each(refs: Sequence[str], act: Any) -> None:
    """``act(ref)`` for every container, up to :data:`PARALLEL` at a time; each ref printed in
    the order given once done, each failure one line on stderr, and every container is tried
    (docker's ``stop``/``rm``). Exits with the first failure's code."""
    results: list[tuple[str, int] | None] = [None] * len(refs)
    if len(refs) == 1:
        results[0] = _attempt(act, refs[0])
    else:
        import threading

        todo = iter(range(len(refs)))
        lock = threading.Lock()

        def worker() -> None:
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                results[i] = _attempt(act, refs[i])

        threads = [threading.Thread(target=worker) for _ in range(min(PARALLEL, len(refs)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    failed: tuple[str, int] | None = None
    for ref, failure in zip(refs, results, strict=True):
        if failure is None:
            echo(ref)
            continue
        echo(f"nyx: {failure[0]}", err=True)
        failed = failed or failure
    if failed is not None:
        raise SystemExit(failed[1])


def stop(socket: str, *, timeout: float | None, containers: Sequence[str]) -> None:
    """Stop containers: SIGTERM, grace period, SIGKILL (several at once)."""
    client = Client(socket)
    _each(containers, lambda ref: client.stop(ref, timeout))


def rm(socket: str, *, force: bool, containers: Sequence[str]) -> None:
    """Remove containers (several at once)."""
    client = Client(socket)
    params = {"force": 1 if force else None}
    _each(
        containers, lambda ref: client.request("DELETE", f"/v1/containers/{q(ref)}", params=params)
    )


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
