"""A tiny HTTP client for nyxd's control socket (stdlib ``http.client`` over AF_UNIX)."""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlencode

__all__ = ["ApiError", "Client", "DaemonUnavailable", "default_socket"]


def default_socket() -> str:
    """``NYXD_SOCKET`` or ``/run/nyx/nyxd.sock``: the same place nyxd binds."""
    return os.environ.get("NYXD_SOCKET") or "/run/nyx/nyxd.sock"


class DaemonUnavailable(Exception):
    """nyxd is not running there, or the socket is not ours to use."""


class ApiError(Exception):
    """nyxd answered with an error object."""

    def __init__(self, status: int, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body or {}


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None = None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.timeout is not None:
            s.settimeout(self.timeout)
        try:
            s.connect(self.unix_path)
        except BaseException:
            s.close()
            raise
        self.sock = s


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
        data: bytes | IO[bytes] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        if params:
            clean = {k: v for k, v in params.items() if v is not None}
            if clean:
                path += "?" + urlencode(clean, doseq=True)
        hdrs = dict(headers or {})
        payload: bytes | IO[bytes] | None = data
        if body is not None:
            payload = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        conn = _UnixConnection(self.socket_path, timeout=timeout)
        try:
            conn.request(method, path, body=payload, headers=hdrs)
            resp = conn.getresponse()
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
            conn.close()
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
        return conn, resp

    def request(self, method: str, path: str, **kw: Any) -> Any:
        conn, resp = self._open(method, path, **kw)
        try:
            raw = resp.read()
        finally:
            conn.close()
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ApiError(resp.status, f"nyxd sent a non-JSON answer: {raw[:80]!r}") from exc

    def stream(self, method: str, path: str, **kw: Any) -> Iterator[bytes]:
        conn, resp = self._open(method, path, **kw)
        try:
            while True:
                chunk = resp.read1(65536)
                if not chunk:
                    return
                yield chunk
        finally:
            resp.close()
            conn.close()

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

    def load(self, path: Path) -> list[dict[str, Any]]:
        size = path.stat().st_size
        with path.open("rb") as f:
            return list(
                self.request(
                    "POST",
                    "/v1/images/load",
                    data=f,
                    headers={"Content-Type": "application/x-tar", "Content-Length": str(size)},
                )
            )
