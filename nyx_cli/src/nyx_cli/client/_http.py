"""A tiny HTTP/1.1 client for nyxd's control socket (AF_UNIX, one request per connection)."""

from __future__ import annotations

import json
import os
import socket
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlencode

__all__ = ["ApiError", "Client", "DaemonUnavailable", "InputError", "default_socket"]


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


class _Response:
    """A minimal HTTP/1.1 response reader (Content-Length, chunked, or until close).

    ``http.client`` costs ~20 ms of import (email parsing); the client must start fast.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.f = sock.makefile("rb")
        line = self.f.readline(65537)
        parts = line.decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise OSError(f"bad HTTP status line {line[:60]!r}")
        self.status = int(parts[1])
        self.reason = parts[2].strip() if len(parts) > 2 else ""
        self.headers: dict[str, str] = {}
        while True:
            h = self.f.readline(65537)
            if h in (b"\r\n", b"\n", b""):
                break
            k, _, v = h.decode("latin-1").partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self.chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        length = self.headers.get("content-length")
        self.left: int | None = int(length) if length is not None and not self.chunked else None
        self.done = False

    def read1(self, n: int = 65536) -> bytes:
        if self.done:
            return b""
        if self.chunked:
            size_line = self.f.readline(1024)
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.done = True
                return b""
            data = self.f.read(size)
            self.f.readline(8)
            return data
        if self.left is not None:
            if self.left <= 0:
                self.done = True
                return b""
            data = self.f.read1(min(n, self.left))
            if not data:
                self.done = True
            self.left -= len(data)
            return data
        data = self.f.read1(n)
        if not data:
            self.done = True
        return data

    def read(self) -> bytes:
        out = []
        while chunk := self.read1(1 << 20):
            out.append(chunk)
        return b"".join(out)

    def close(self) -> None:
        self.f.close()
        self.sock.close()


def _send(sock: socket.socket, method: str, path: str, hdrs: dict[str, str], payload: Any) -> None:
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


def q(ref: str) -> str:
    return quote(ref, safe="")


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
                path += "?" + urlencode(clean, doseq=True)
        hdrs = dict(headers or {})
        payload: bytes | IO[bytes] | Iterator[bytes] | None = data
        if body is not None:
            payload = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
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
                obj = json.loads(raw)
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
            return json.loads(raw)
        except ValueError as exc:
            raise ApiError(resp.status, f"nyxd sent a non-JSON answer: {raw[:80]!r}") from exc

    def stream(self, method: str, path: str, **kw: Any) -> Iterator[bytes]:
        resp = self._open(method, path, **kw)
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
                    yield json.loads(line)
        if buf.strip():
            yield json.loads(buf)

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
