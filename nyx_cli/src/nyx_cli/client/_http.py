"""A tiny HTTP/1.1 client for nyxd's control socket (AF_UNIX, one request per connection).

It is the ``nyx`` client's whole transport, so it imports only C modules at import time
(``_socket``, ``_json``): ``socket``, ``json``, ``urllib.parse``, ``typing`` and
``http.client`` cost 5-20 ms of import each on a busy machine, more than the request itself.
The few pieces of them used here are written out (the percent-encoding of ``urllib.parse``)
or called at the C level the standard modules use themselves (``json``'s encoder and
scanner with ``json.dumps``/``json.loads`` defaults).
"""

from __future__ import annotations

import _socket
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path
    from typing import IO, Any

__all__ = [
    "ApiError",
    "Client",
    "DaemonUnavailable",
    "InputError",
    "default_socket",
    "dumps",
    "loads",
    "q",
]


def default_socket() -> str:
    """``NYXD_SOCKET`` or ``/run/nyx/nyxd.sock``: the same place nyxd binds."""
    return os.environ.get("NYXD_SOCKET") or "/run/nyx/nyxd.sock"


class DaemonUnavailable(Exception):
    """nyxd is not running there, or the socket is not ours to use."""


class InputError(Exception):
    """What the client was to send could not be read."""


class ApiError(Exception):
    """nyxd answered with an error object."""

    def __init__(self, status: int, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body or {}


# ------------------------------------------------------------------------------ JSON

_WS = " \t\n\r"


def _not_serializable(obj: object) -> object:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


class _Decoding:
    """The settings ``_json.make_scanner`` reads: those of ``json.loads`` with no arguments."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {
        "-Infinity": float("-inf"),
        "Infinity": float("inf"),
        "NaN": float("nan"),
    }.__getitem__


try:  # the C halves of json.dumps and json.loads (CPython builds them in)
    from _json import encode_basestring_ascii as _c_string
    from _json import make_encoder as _c_encoder
    from _json import make_scanner as _c_scanner

    _decoding: Any = _Decoding()
    _scan: Any = _c_scanner(_decoding)
except ImportError:  # pragma: no cover - an interpreter without json's accelerator
    _scan = None


def dumps(obj: Any) -> str:
    """``json.dumps(obj)``: the same text, without importing ``json``."""
    if _scan is None:  # pragma: no cover
        import json

        return json.dumps(obj)
    encode = _c_encoder({}, _not_serializable, _c_string, None, ": ", ", ", False, False, True)
    return "".join(encode(obj, 0))


def loads(data: bytes | str) -> Any:
    """``json.loads(data)`` for UTF-8 input; a ``ValueError`` for anything else."""
    text = data.decode("utf-8", "surrogatepass") if isinstance(data, bytes) else data
    if _scan is None:  # pragma: no cover
        import json

        return json.loads(text)
    start = len(text) - len(text.lstrip(_WS))
    try:
        obj, end = _scan(text, start)
    except StopIteration as exc:
        raise ValueError(f"Expecting value: char {exc.value}") from None
    if text[end:].strip(_WS):
        raise ValueError(f"Extra data: char {end}")
    return obj


# ------------------------------------------------------------------------------ URLs

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def q(ref: str, *, plus: bool = False) -> str:
    """``urllib.parse.quote(ref, safe="")`` (``quote_plus`` with ``plus``): one path segment."""
    return "".join(
        chr(b) if b in _UNRESERVED else "+" if plus and b == 32 else f"%{b:02X}"
        for b in ref.encode("utf-8")
    )


def _query(params: dict[str, Any]) -> str:
    """``urllib.parse.urlencode(params, doseq=True)`` for scalars and lists of scalars."""
    pairs = []
    for key, value in params.items():
        for item in value if isinstance(value, (list, tuple)) else (value,):
            pairs.append(f"{q(str(key), plus=True)}={q(str(item), plus=True)}")
    return "&".join(pairs)


# ------------------------------------------------------------------------------ HTTP


class _Response:
    """A minimal HTTP/1.1 response reader (Content-Length, chunked, or until close)."""

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        line = self._line()
        parts = line.decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise OSError(f"bad HTTP status line {line[:60]!r}")
        self.status = int(parts[1])
        self.reason = parts[2].strip() if len(parts) > 2 else ""
        self.headers: dict[str, str] = {}
        while True:
            h = self._line()
            if h in (b"\r\n", b"\n", b""):
                break
            k, _, v = h.decode("latin-1").partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self.chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        length = self.headers.get("content-length")
        self.left: int | None = int(length) if length is not None and not self.chunked else None
        self.done = False

    def _recv(self, n: int) -> bytes:
        """Buffered bytes first, else what one ``recv`` brings (``b""`` at the end)."""
        if self.buf:
            data, self.buf = self.buf[:n], self.buf[n:]
            return data
        return self.sock.recv(min(n, 1 << 18))

    def _line(self, limit: int = 65537) -> bytes:
        while True:
            i = self.buf.find(b"\n", 0, limit)
            if i >= 0:
                line, self.buf = self.buf[: i + 1], self.buf[i + 1 :]
                return line
            more = b"" if len(self.buf) >= limit else self.sock.recv(1 << 16)
            if not more:
                line, self.buf = self.buf[:limit], self.buf[limit:]
                return line
            self.buf += more

    def _exact(self, n: int) -> bytes:
        parts = []
        while n > 0 and (data := self._recv(n)):
            parts.append(data)
            n -= len(data)
        return b"".join(parts)

    def read1(self, n: int = 65536) -> bytes:
        if self.done:
            return b""
        if self.chunked:
            size_line = self._line(1024)
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.done = True
                return b""
            data = self._exact(size)
            self._line(8)
            return data
        if self.left is not None:
            if self.left <= 0:
                self.done = True
                return b""
            data = self._recv(min(n, self.left))
            if not data:
                self.done = True
            self.left -= len(data)
            return data
        data = self._recv(n)
        if not data:
            self.done = True
        return data

    def read(self) -> bytes:
        out = []
        while chunk := self.read1(1 << 20):
            out.append(chunk)
        return b"".join(out)

    def close(self) -> None:
        self.sock.close()


def _send(sock: _socket.socket, method: str, path: str, hdrs: dict[str, str], payload: Any) -> None:
    if isinstance(payload, bytes):
        hdrs.setdefault("Content-Length", str(len(payload)))
    elif payload is None and method in ("POST", "PUT"):
        hdrs.setdefault("Content-Length", "0")
    elif payload is not None and "Content-Length" not in hdrs:
        hdrs["Transfer-Encoding"] = "chunked"  # a stream of unknown length
    head = f"{method} {path} HTTP/1.1\r\nHost: nyxd\r\nConnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    sock.sendall(head.encode("latin-1"))
    if isinstance(payload, bytes):
        sock.sendall(payload)
    elif payload is not None:
        chunks = iter(lambda: payload.read(1 << 20), b"") if hasattr(payload, "read") else payload
        chunked = "Transfer-Encoding" in hdrs
        for chunk in chunks:
            if chunk:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
        if chunked:
            sock.sendall(b"0\r\n\r\n")


def tar_stream(root: Path) -> Iterator[bytes]:
    """A tar of the directory ``root`` (its entries at the top), read as the caller can."""
    import tarfile
    import threading

    r, w = os.pipe()
    failed: list[BaseException] = []

    def produce() -> None:
        try:
            with os.fdopen(w, "wb") as out, tarfile.open(fileobj=out, mode="w|") as tar:
                for child in sorted(root.iterdir()):
                    tar.add(child, arcname=child.name)
        except BaseException as exc:  # handed to the reading side
            failed.append(exc)

    writer = threading.Thread(target=produce, name="tar", daemon=True)
    writer.start()
    with os.fdopen(r, "rb") as f:
        while chunk := f.read1(1 << 20):
            yield chunk
    writer.join()
    if failed:
        raise InputError(f"cannot read {str(root)!r}: {failed[0]}") from failed[0]


class Client:
    """One request per connection; errors become :class:`ApiError`/:class:`DaemonUnavailable`."""

    def __init__(self, socket_path: str | os.PathLike[str] | None = None) -> None:
        self.socket_path = str(socket_path or default_socket())

    def _open(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        data: bytes | IO[bytes] | Iterator[bytes] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> _Response:
        if params:
            clean = {k: v for k, v in params.items() if v is not None}
            if clean:
                path += "?" + _query(clean)
        hdrs = dict(headers or {})
        payload: bytes | IO[bytes] | Iterator[bytes] | None = data
        if body is not None:
            payload = dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        conn.settimeout(timeout)
        try:
            conn.connect(self.socket_path)
            try:
                _send(conn, method, path, hdrs, payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # nyxd answered before reading everything (413): read that answer
            resp = _Response(conn)
        except FileNotFoundError as exc:
            conn.close()
            raise DaemonUnavailable(
                f"cannot connect to nyxd at {self.socket_path}: no such socket "
                "(is nyxd running? set --socket or NYXD_SOCKET)"
            ) from exc
        except ConnectionRefusedError as exc:
            conn.close()
            raise DaemonUnavailable(
                f"cannot connect to nyxd at {self.socket_path}: connection refused "
                "(nyxd is not running)"
            ) from exc
        except PermissionError as exc:
            conn.close()
            raise DaemonUnavailable(
                f"permission denied on {self.socket_path}: run as root or join group nyx"
            ) from exc
        except OSError as exc:
            conn.close()
            raise DaemonUnavailable(f"cannot talk to nyxd at {self.socket_path}: {exc}") from exc
        if resp.status >= 400:
            raw = resp.read()
            resp.close()
            try:
                obj = loads(raw)
                msg = obj.get("error") if isinstance(obj, dict) else None
            except ValueError:
                obj, msg = None, None
            raise ApiError(
                resp.status,
                msg or f"HTTP {resp.status} {resp.reason}",
                obj if isinstance(obj, dict) else None,
            )
        return resp

    def request(self, method: str, path: str, **kw: Any) -> Any:
        resp = self._open(method, path, **kw)
        try:
            raw = resp.read()
        finally:
            resp.close()
        if not raw:
            return None
        try:
            return loads(raw)
        except ValueError as exc:
            raise ApiError(resp.status, f"nyxd sent a non-JSON answer: {raw[:80]!r}") from exc

    def stream(self, method: str, path: str, **kw: Any) -> Iterator[bytes]:
        resp = self._open(method, path, **kw)
        return self._chunks(resp)

    @staticmethod
    def _chunks(resp: Any) -> Iterator[bytes]:
        try:
            while True:
                chunk = resp.read1(65536)
                if not chunk:
                    return
                yield chunk
        finally:
            resp.close()

    def lines(self, method: str, path: str, **kw: Any) -> Iterator[dict[str, Any]]:
        buf = b""
        for chunk in self.stream(method, path, **kw):
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    yield loads(line)
        if buf.strip():
            yield loads(buf)

    # ------------------------------------------------------------ typed helpers

    def info(self) -> dict[str, Any]:
        return dict(self.request("GET", "/v1/info"))

    def create(self, spec: dict[str, Any], start: bool = True) -> dict[str, Any]:
        return dict(self.request("POST", "/v1/containers", body={**spec, "start": start}))

    def start(self, ref: str) -> dict[str, Any]:
        return dict(self.request("POST", f"/v1/containers/{q(ref)}/start"))

    def stop(self, ref: str, timeout: float | None = None) -> dict[str, Any]:
        return dict(
            self.request("POST", f"/v1/containers/{q(ref)}/stop", params={"timeout": timeout})
        )

    def wait(self, ref: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/v1/containers/{q(ref)}/wait"))

    def load(self, path: Path | IO[bytes]) -> list[dict[str, Any]]:
        """Send an image tar, an OCI layout directory (as a tar) or a stream of tar bytes."""
        from pathlib import Path

        headers = {"Content-Type": "application/x-tar"}
        if not isinstance(path, Path):
            return list(self.request("POST", "/v1/images/load", data=path, headers=headers))
        if path.is_dir():
            return list(
                self.request("POST", "/v1/images/load", data=tar_stream(path), headers=headers)
            )
        try:
            f = path.open("rb")
            size = os.fstat(f.fileno()).st_size
        except OSError as exc:
            raise InputError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from exc
        with f:
            return list(
                self.request(
                    "POST",
                    "/v1/images/load",
                    data=f,
                    headers={**headers, "Content-Length": str(size)},
                )
            )
