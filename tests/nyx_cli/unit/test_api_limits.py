"""Hostile clients on the control socket: raw bytes on a real unix socket.

Every malformed request gets a 4xx ``{"error": ...}`` (never a hang, never a 500 with
exception text), bodies and nesting are capped, idle connections are capped and closed,
booleans are strict, and nyxd loads images only from the bytes its client sends.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import stat
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nyx_cli.client._http import ApiError, Client

WAIT = 10.0  # seconds a test waits for an answer before it calls the server hung


def connect(sock: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(WAIT)
    s.connect(str(sock))
    return s


def read_response(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, f"connection closed without an answer after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
    if "content-length" in headers:
        while len(body) < int(headers["content-length"]):
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
    return int(lines[0].split()[1]), headers, body


def exchange(sock: Path, data: bytes) -> tuple[int, dict[str, str], bytes]:
    with connect(sock) as s:
        try:
            s.sendall(data)
        except BrokenPipeError:
            pass  # answered and closed before reading (503 over the cap): the answer waits
        return read_response(s)


def error_of(status: int, headers: dict[str, str], body: bytes) -> str:
    """The ``error`` of a JSON error answer (which every 4xx must be)."""
    assert headers.get("content-type") == "application/json", (status, headers, body)
    obj = json.loads(body)
    assert isinstance(obj, dict) and isinstance(obj["error"], str), obj
    return obj["error"]


def post(path: str, body: bytes, extra: str = "") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}"
    return head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body


# ----------------------------------------------------------------- framing


@pytest.mark.parametrize("length", ["-1", "abc", "1e3", "12, 13", " "])
def test_bad_content_length_is_400(api: Path, length: str) -> None:
    status, headers, body = exchange(
        api,
        b"POST /v1/networks HTTP/1.1\r\nHost: x\r\nContent-Length: %s\r\n\r\n{}" % length.encode(),
    )
    assert status == 400
    assert "malformed HTTP request" in error_of(status, headers, body)


def test_huge_content_length_is_413_before_the_body(api: Path) -> None:
    # 512 MiB announced, none sent: the answer comes without reading (or waiting for) it
    status, headers, body = exchange(
        api,
        b"POST /v1/networks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 536870912\r\n\r\n{",
    )
    assert status == 413 and "limit" in error_of(status, headers, body)
    assert headers.get("connection") == "close"


def test_content_length_of_many_digits_is_refused(api: Path) -> None:
    status, headers, body = exchange(
        api, b"POST /v1/networks HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 40 + b"\r\n\r\n"
    )
    assert status in (400, 413)
    error_of(status, headers, body)


@pytest.mark.parametrize("size", [b"zz", b"-5", b"0x10", b"1" * 30, b""])
def test_bad_chunk_size_is_400(api: Path, size: bytes) -> None:
    status, headers, body = exchange(
        api,
        b"POST /v1/networks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + size
        + b"\r\n{}\r\n0\r\n\r\n",
    )
    assert status == 400
    assert "malformed HTTP request" in error_of(status, headers, body)


def test_chunked_json_over_the_cap_is_413(make_api: Callable[..., Path]) -> None:
    sock = make_api(api_max_body=64 * 1024)
    with connect(sock) as s:
        s.sendall(
            b"POST /v1/networks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        piece = b" " * 16384
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(64):  # 1 MiB offered, the cap is 64 KiB
                s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        status, headers, body = read_response(s)
    assert status == 413 and "limit" in error_of(status, headers, body)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"\x00\x01\x02 / HTTP/1.1\r\n\r\n",
        b"GET /v1/info HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET /v1/info HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"GET /v1/info HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
        b"GET /v1/info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"GET /v1/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
)
def test_garbage_request_is_a_json_4xx(api: Path, request_bytes: bytes) -> None:
    status, headers, body = exchange(api, request_bytes)
    assert 400 <= status < 500
    error_of(status, headers, body)


def test_header_flood_is_431(api: Path) -> None:
    flood = b"".join(b"X-%d: %s\r\n" % (i, b"y" * 60) for i in range(2000))  # ~140 KiB
    with connect(api) as s:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(b"GET /v1/info HTTP/1.1\r\nHost: x\r\n" + flood + b"\r\n")
        status, headers, body = read_response(s)
    assert status == 431
    error_of(status, headers, body)


def test_one_long_header_line_is_431(api: Path) -> None:
    with connect(api) as s:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(b"GET /v1/info HTTP/1.1\r\nHost: x\r\nX: " + b"y" * 200_000 + b"\r\n\r\n")
        status, headers, body = read_response(s)
    assert status == 431
    error_of(status, headers, body)


def test_bad_query_value_is_400(api: Path) -> None:
    status, headers, body = exchange(
        api, b"GET /v1/containers?all=maybe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status == 400 and "all='maybe'" in error_of(status, headers, body)


# ----------------------------------------------------------------- JSON


def test_200_deep_json_is_400(api: Path) -> None:
    deep = b"[" * 200 + b"]" * 200
    body = b'{"image": "busybox:nyx", "labels": {"a": ' + deep + b"}}"
    status, headers, answer = exchange(api, post("/v1/containers", body, "Connection: close\r\n"))
    assert status == 400 and "nests deeper than" in error_of(status, headers, answer)


def test_very_deep_json_is_400_not_500(api: Path) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    status, headers, answer = exchange(api, post("/v1/networks", deep, "Connection: close\r\n"))
    assert status == 400 and "nests deeper than" in error_of(status, headers, answer)


def test_internal_false_as_a_string_is_400_naming_the_field(api: Path, fake_sup: Any) -> None:
    c = Client(api)
    with pytest.raises(ApiError) as info:
        c.request("POST", "/v1/networks", body={"name": "back", "internal": "false"})
    assert info.value.status == 400
    assert "internal" in str(info.value) and "'false'" in str(info.value)
    assert (
        c.request("POST", "/v1/networks", body={"name": "back", "internal": False})["internal"]
        is False
    )


def test_container_spec_booleans_and_numbers_are_strict(api: Path) -> None:
    c = Client(api)
    for bad, field in (
        ({"rm": "false"}, "rm"),
        ({"internal": "false"}, "internal"),
        ({"dns": "false"}, "dns"),
        ({"start": "false"}, "start"),
        ({"ports": [{"host_port": "8080", "container_port": 80}]}, "host_port"),
    ):
        with pytest.raises(ApiError) as info:
            c.request("POST", "/v1/containers", body={"image": "busybox:nyx", **bad})
        assert info.value.status == 400 and field in str(info.value), bad
    assert c.request("GET", "/v1/containers", params={"all": 1}) == []


def test_pull_insecure_is_strict_and_passed_through(api: Path) -> None:
    c = Client(api)
    with pytest.raises(ApiError) as info:
        c.request("POST", "/v1/images/pull", body={"reference": "a:1", "insecure": "false"})
    assert info.value.status == 400 and "insecure" in str(info.value)
    got = c.request("POST", "/v1/images/pull", body={"reference": "a:1", "insecure": True})
    assert got["insecure"] is True
    got = c.request("POST", "/v1/images/pull", body={"reference": "a:1"})
    assert got["insecure"] is False


def test_internal_errors_do_not_leak_exception_text(api: Path, fake_sup: Any) -> None:
    fake_sup.fail_start = RuntimeError("secret detail of nyxd's internals")
    with pytest.raises(ApiError) as info:
        Client(api).create({"image": "busybox:nyx"})
    assert info.value.status == 500
    assert "secret" not in str(info.value) and "RuntimeError" in str(info.value)


# ----------------------------------------------------------------- connections


def test_idle_connections_are_capped_and_closed(make_api: Callable[..., Path]) -> None:
    sock = make_api(api_max_connections=2, api_idle_timeout=0.5)
    idle = [connect(sock) for _ in range(2)]
    try:
        # a third client is answered (503 now, or 200 once an idle one is gone): never stuck
        status, headers, body = exchange(
            sock, b"GET /v1/info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert status in (200, 503)
        if status == 503:
            assert "connections" in error_of(status, headers, body)
        for s in idle:  # silent connections are closed by nyxd
            assert s.recv(1) == b""
    finally:
        for s in idle:
            s.close()
    deadline = time.monotonic() + WAIT
    while True:  # and the slots they held serve new clients
        status, _, _ = exchange(
            sock, b"GET /v1/info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert status == 200


def test_a_trickled_request_head_is_cut_off(make_api: Callable[..., Path]) -> None:
    sock = make_api(api_idle_timeout=0.5)
    with connect(sock) as s:
        s.sendall(b"GET /v1/info HTTP/1.1\r\nHost: x\r\n")
        s.settimeout(0.1)
        answer = b""
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for i in range(int(WAIT / 0.1)):  # one header line each 0.1 s, each within the
                s.sendall(b"X-%d: y\r\n" % i)  # idle timeout, the whole head never
                with contextlib.suppress(TimeoutError):
                    answer = s.recv(65536)
                    break
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]


def test_keep_alive_after_an_error(api: Path) -> None:
    with connect(api) as s:
        s.sendall(b"GET /v1/containers/nope HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(s)[0] == 404
        s.sendall(b"GET /v1/info HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(s)[0] == 200


# ----------------------------------------------------------------- image load

PATH_LOAD = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
body = json.dumps({"path": sys.argv[2]}).encode()
s.sendall(b"POST /v1/images/load HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
          b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
data = b""
while chunk := s.recv(65536):
    data += chunk
sys.stdout.buffer.write(data)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="runs a client as uid 65534")
def test_path_load_from_an_unprivileged_peer_is_refused(
    make_api: Callable[..., Path], fake_sup: Any, open_socket_dir: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "root-only"
    secret.write_bytes(b"root's secret")
    secret.chmod(0o600)
    sock = make_api(sock=open_socket_dir / "nyxd.sock")
    sock.chmod(0o666)  # a socket nobody may connect to
    out = subprocess.run(
        ["/usr/bin/python3", "-I", "-c", PATH_LOAD, str(sock), str(secret)],
        user=65534,
        group=65534,
        capture_output=True,
        timeout=30,
        check=True,
    ).stdout
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), out
    assert "request body only" in json.loads(body)["error"]
    assert fake_sup.loaded == []  # nyxd opened nothing


def test_path_load_is_refused_for_root_too(api: Path, fake_sup: Any) -> None:
    with pytest.raises(ApiError) as info:
        Client(api).request("POST", "/v1/images/load", body={"path": "/etc/shadow"})
    assert info.value.status == 400 and fake_sup.loaded == []


def test_upload_is_staged_privately_and_removed(api: Path, fake_sup: Any, tmp_path: Path) -> None:
    upload = tmp_path / "img.tar"
    upload.write_bytes(b"pretend tar" * 1000)
    Client(api).load(upload)
    assert fake_sup.loaded == [b"pretend tar" * 1000]
    ((file_mode, dir_mode),) = fake_sup.load_modes
    assert stat.S_IMODE(file_mode) == 0o600 and stat.S_IMODE(dir_mode) == 0o700
    tmp = tmp_path / "state" / "tmp"
    assert stat.S_IMODE(tmp.stat().st_mode) == 0o700 and not list(tmp.iterdir())
    fake_sup.fail_load = RuntimeError("bad tar")
    with pytest.raises(ApiError):
        Client(api).load(upload)
    assert not list(tmp.iterdir())  # removed on failure too


def test_upload_of_unknown_length_is_streamed(api: Path, fake_sup: Any) -> None:
    Client(api).load(io.BytesIO(b"pretend tar" * 100_000))  # chunked, as `nyx load` < stdin
    assert fake_sup.loaded == [b"pretend tar" * 100_000]


def test_upload_over_the_cap_is_413_and_leaves_nothing(
    make_api: Callable[..., Path], fake_sup: Any, tmp_path: Path
) -> None:
    sock = make_api(api_max_upload=1 << 20)
    big = tmp_path / "big.tar"
    big.write_bytes(b"\0" * (4 << 20))
    with pytest.raises(ApiError) as info:
        Client(sock).load(big)  # with Content-Length: refused before reading
    assert info.value.status == 413
    with pytest.raises(ApiError) as info:
        Client(sock).load(io.BytesIO(b"\0" * (4 << 20)))  # chunked: cut off at the cap
    assert info.value.status == 413
    assert fake_sup.loaded == []
    assert not list((tmp_path / "state" / "tmp").iterdir())


def test_client_streams_an_oci_layout_directory(api: Path, fake_sup: Any, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "index.json").write_text('{"manifests": []}')
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "blobs" / "sha256" / "ab").write_bytes(b"blob" * 100_000)
    assert Client(api).load(layout)[0]["repo_tags"] == ["loaded:1"]
    with tarfile.open(fileobj=io.BytesIO(fake_sup.loaded[0])) as tar:
        names = set(tar.getnames())
        assert {"index.json", "oci-layout", "blobs/sha256/ab"} <= names
        member = tar.extractfile("blobs/sha256/ab")
        assert member is not None and member.read() == b"blob" * 100_000


CONNECT = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("EACCES")
else:
    print("connected")
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="runs a client as uid 65534")
def test_socket_is_private(make_api: Callable[..., Path], open_socket_dir: Path) -> None:
    sock = make_api(sock=open_socket_dir / "nyxd.sock")
    st = sock.stat()
    assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_uid == 0
    out = subprocess.run(
        ["/usr/bin/python3", "-I", "-c", CONNECT, str(sock)],
        user=65534,
        group=65534,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert out.strip() == "EACCES"
