"""HTTP/1.1 on the control socket: h11 parses and frames, this module adds the limits.

One thread per connection (a blocking ``wait`` or a followed ``logs`` stream holds only its
own connection), at most ``max_connections`` of them: a connection beyond the cap is
answered ``503`` at once and closed. h11 validates the request line, the headers,
``Content-Length`` and the chunked framing, and caps the request head (431); this module adds
the rest: a deadline for the request head and for every read of a body (a connection idle
longer than ``idle_timeout`` is closed), a cap on JSON bodies (413, refused from
``Content-Length`` before a byte of the body is read), a cap on streamed uploads, and a cap
on JSON nesting. Every malformed request gets a 4xx ``{"error": "..."}``.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import h11
from loguru import logger

from ._settings import DaemonSettings

__all__ = ["MAX_HEAD", "MAX_JSON_DEPTH", "Exchange", "HttpError", "HttpServer", "Limits"]

MAX_HEAD = 64 * 1024
"""Request line plus headers, in bytes (h11 answers 431 beyond it)."""
MAX_JSON_DEPTH = 32
"""Nesting of arrays and objects in a JSON body (a ContainerSpec needs 6)."""
MAX_QUERY_FIELDS = 64
_RECV = 65536


def _default(name: str) -> Any:
    return DaemonSettings.model_fields[name].default


@dataclass(frozen=True)
class Limits:
    """The API's limits; nyxd takes them from its settings (``NYXD_API_*``)."""

    max_connections: int = _default("api_max_connections")
    idle_timeout: float = _default("api_idle_timeout")
    max_body: int = _default("api_max_body")
    max_upload: int = _default("api_max_upload")

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        """The ``api_*`` fields of ``settings``; a field it lacks keeps its default."""
        default = cls()
        return cls(
            max_connections=int(getattr(settings, "api_max_connections", default.max_connections)),
            idle_timeout=float(getattr(settings, "api_idle_timeout", default.idle_timeout)),
            max_body=int(getattr(settings, "api_max_body", default.max_body)),
            max_upload=int(getattr(settings, "api_max_upload", default.max_upload)),
        )


class HttpError(Exception):
    """An answer with this status and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Closed(Exception):
    """The peer went away or stayed silent too long: close without an answer."""


def _json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _too_deep(obj: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def parse_json(raw: bytes) -> Any:
    """``raw`` as JSON, nested at most :data:`MAX_JSON_DEPTH` deep, else HttpError 400."""
    try:
        obj = json.loads(raw, parse_constant=_json_constant)
    except RecursionError as exc:
        raise HttpError(400, f"request body nests deeper than {MAX_JSON_DEPTH}") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise HttpError(400, f"request body is not JSON: {exc}") from exc
    if isinstance(obj, dict | list) and _too_deep(obj, MAX_JSON_DEPTH):
        raise HttpError(400, f"request body nests deeper than {MAX_JSON_DEPTH}")
    return obj


class Exchange:
    """One request on a connection and the means to read its body and answer it."""

    def __init__(self, conn: _Connection, request: h11.Request) -> None:
        self._conn = conn
        if request.http_version not in (b"1.0", b"1.1"):
            version = request.http_version.decode("ascii", "replace")
            raise HttpError(400, f"HTTP version {version} is not supported (1.1 is)")
        self.method = request.method.decode("ascii")
        try:
            self.target = request.target.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HttpError(400, "request target is not UTF-8") from exc
        self.headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in request.headers}
        self.started = False  # the response's head was sent

    @property
    def limits(self) -> Limits:
        return self._conn.server.limits

    # ------------------------------------------------------------------ request body

    def body_chunks(self, limit: int) -> Iterator[bytes]:
        """The body as it arrives; HttpError 413 as soon as it exceeds ``limit`` bytes."""
        h = self._conn.h11
        if h.their_state is not h11.SEND_BODY:
            return
        length = self.headers.get("content-length")
        if length is not None and int(length) > limit:  # h11 checked it is digits
            raise HttpError(413, f"request body of {length} bytes is over the limit of {limit}")
        if h.they_are_waiting_for_100_continue:
            self._conn.send(h11.InformationalResponse(status_code=100, headers=[]))
        total = 0
        while True:
            event = self._conn.next_event(None)
            if isinstance(event, h11.Data):
                total += len(event.data)
                if total > limit:
                    raise HttpError(413, f"request body is over the limit of {limit} bytes")
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return
            else:  # ConnectionClosed in the middle of the body
                raise _Closed()

    def body(self, limit: int) -> bytes:
        return b"".join(self.body_chunks(limit))

    def json(self) -> Any:
        """The body as JSON (``{}`` when empty), capped at ``max_body`` bytes."""
        raw = self.body(self.limits.max_body)
        return parse_json(raw) if raw.strip() else {}

    def discard_body(self) -> None:
        """Read and drop a body the route does not take (up to ``max_body`` bytes)."""
        for _ in self.body_chunks(self.limits.max_body):
            pass

    # ------------------------------------------------------------------ response

    def _head(self, status: int, headers: list[tuple[str, str]]) -> None:
        if self._conn.h11.their_state is not h11.DONE:
            headers.append(("Connection", "close"))  # the rest of the body stays unread
        headers.append(("Server", "nyxd"))
        self._conn.send(h11.Response(status_code=status, headers=headers))
        self.started = True

    def send_json(self, status: int, obj: Any) -> None:
        data = json.dumps(obj, default=str).encode()
        self._head(
            status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        )
        self._conn.send(h11.Data(data=data))
        self._conn.send(h11.EndOfMessage())

    def send_empty(self, status: int = 204) -> None:
        self._head(status, [] if status == 204 else [("Content-Length", "0")])
        self._conn.send(h11.EndOfMessage())

    def send_stream(self, content_type: str, chunks: Iterator[bytes]) -> None:
        self._head(status=200, headers=[("Content-Type", content_type)])
        try:
            for chunk in chunks:
                if chunk:
                    self._conn.send(h11.Data(data=chunk))
        finally:  # a peer gone mid-stream: let a followed log or a pull stop now
            close = getattr(chunks, "close", None)
            if callable(close):
                close()
        self._conn.send(h11.EndOfMessage())


Handler = Callable[[Exchange], None]
ErrorBody = Callable[[BaseException], tuple[int, dict[str, Any]]]


class _Connection:
    def __init__(self, server: HttpServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)

    def send(self, event: Any) -> None:
        data = self.h11.send(event)
        if data:
            self.sock.settimeout(self.server.limits.idle_timeout)
            self.sock.sendall(data)

    def next_event(self, deadline: float | None) -> Any:
        """The next h11 event; every read waits at most ``idle_timeout`` (or to ``deadline``)."""
        idle = self.server.limits.idle_timeout
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            wait = idle if deadline is None else min(idle, deadline - time.monotonic())
            if wait <= 0:
                raise TimeoutError("request head not complete in time")
            self.sock.settimeout(wait)
            self.h11.receive_data(self.sock.recv(_RECV))

    def serve(self) -> None:
        try:
            while self._one_request():
                self.h11.start_next_cycle()
        except (_Closed, OSError):
            pass  # peer gone, or a timeout: nothing more to say
        finally:
            with contextlib.suppress(OSError):
                self.sock.close()

    def _one_request(self) -> bool:
        """Serve one request; whether the connection can carry another one."""
        deadline = time.monotonic() + self.server.limits.idle_timeout
        try:
            event = self.next_event(deadline)
        except h11.RemoteProtocolError as exc:
            self._protocol_error(exc)
            return False
        except TimeoutError:
            if self.h11.trailing_data[0]:
                self._answer_error(HttpError(408, "request head not complete in time"))
            return False
        if not isinstance(event, h11.Request):
            return False  # ConnectionClosed
        try:
            exchange = Exchange(self, event)
        except HttpError as exc:
            self._answer_error(exc)
            return False
        try:
            self.server.handler(exchange)
        except (_Closed, OSError):
            return False
        except h11.RemoteProtocolError as exc:  # a bad chunk size in the body
            self._protocol_error(exc)
            return False
        except Exception as exc:
            if exchange.started:  # a stream failed half-way: all we can do is stop
                logger.bind(error=repr(exc)).warning("api stream failed")
                return False
            self._answer_error(exc)
        return self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE

    def _protocol_error(self, exc: h11.RemoteProtocolError) -> None:
        status = exc.error_status_hint if 400 <= exc.error_status_hint < 500 else 400
        self._answer_error(HttpError(status, f"malformed HTTP request: {exc}"))

    def _answer_error(self, exc: BaseException) -> None:
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        status, body = self.server.error_body(exc)
        data = json.dumps(body, default=str).encode()
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            ("Server", "nyxd"),
        ]
        if self.h11.their_state is not h11.DONE:
            headers.append(("Connection", "close"))
        with contextlib.suppress(OSError, h11.LocalProtocolError):
            self.send(h11.Response(status_code=status, headers=headers))
            self.send(h11.Data(data=data))
            self.send(h11.EndOfMessage())


class HttpServer:
    """Accepts connections on a bound, listening unix socket; one thread per connection."""

    def __init__(
        self, sock: socket.socket, handler: Handler, error_body: ErrorBody, limits: Limits
    ) -> None:
        self.sock = sock
        self.handler = handler
        self.error_body = error_body
        self.limits = limits
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._accept_loop, name="api", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop accepting and shut the open connections down."""
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            for conn in list(self._open):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        for s in (self.sock, self._wake_r, self._wake_w):
            s.close()

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while True:
                ready = [key.fileobj for key, _ in sel.select()]
                if self._wake_r in ready:
                    return
                try:
                    conn, _ = self.sock.accept()
                except OSError:
                    continue
                if not self._slots.acquire(blocking=False):
                    self._refuse(conn)
                    continue
                with self._lock:
                    self._open.add(conn)
                threading.Thread(
                    target=self._serve, args=(conn,), name="api-conn", daemon=True
                ).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            _Connection(self, conn).serve()
        except Exception:
            logger.opt(exception=True).warning("api connection failed")
        finally:
            with self._lock:
                self._open.discard(conn)
            self._slots.release()

    def _refuse(self, conn: socket.socket) -> None:
        limit = self.limits.max_connections
        data = json.dumps({"error": f"nyxd serves {limit} connections at most; try again"})
        head = (
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\nServer: nyxd\r\n\r\n"
        )
        logger.bind(limit=limit).warning("api connection refused: too many connections")
        with contextlib.suppress(OSError):
            conn.setblocking(False)  # never wait on a peer that does not read
            conn.send((head + data).encode())
        conn.close()
