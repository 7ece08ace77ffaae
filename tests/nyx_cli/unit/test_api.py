"""The control-socket API against a fake supervisor (no root): routes, codes, errors."""

from __future__ import annotations

import json
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from nyx_cli.client._http import ApiError, Client


def raw(sock: Path, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock))
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def test_socket_mode_0660(api: Path) -> None:
    assert stat.S_IMODE(api.stat().st_mode) == 0o660


def test_info(api: Path) -> None:
    info = Client(api).info()
    assert info["driver"] == "fake" and info["version"] == "0.1.0"


def test_create_is_201_and_listed(api: Path) -> None:
    c = Client(api)
    created = c.request("POST", "/v1/containers", body={"image": "busybox:nyx", "name": "web"})
    assert created["state"] == "running" and created["name"] == "web"
    assert [x["name"] for x in c.request("GET", "/v1/containers")] == ["web"]
    assert c.request("GET", "/v1/containers/web")["id"] == created["id"]


def test_create_not_started(api: Path) -> None:
    c = Client(api)
    created = c.create({"image": "busybox:nyx"}, start=False)
    assert created["state"] == "created"
    assert c.request("GET", "/v1/containers") == []
    assert len(c.request("GET", "/v1/containers", params={"all": 1})) == 1


def test_bad_spec_is_400_naming_the_field(api: Path) -> None:
    with pytest.raises(ApiError) as info:
        Client(api).request("POST", "/v1/containers", body={"image": "busybox:nyx", "bogus": 1})
    assert info.value.status == 400 and "bogus" in str(info.value)
    with pytest.raises(ApiError) as info:
        Client(api).request(
            "POST", "/v1/containers", body={"image": "busybox:nyx", "ports": [{"host_port": 0}]}
        )
    assert info.value.status == 400 and "host_port" in str(info.value)


def test_not_json_is_400(api: Path) -> None:
    status, _, body = raw(
        api,
        b"POST /v1/containers HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        b"Connection: close\r\n\r\n{x}",
    )
    assert status == 400 and "not JSON" in json.loads(body)["error"]


def test_errors_are_json_with_status(api: Path) -> None:
    c = Client(api)
    with pytest.raises(ApiError) as info:
        c.request("GET", "/v1/containers/nope")
    assert info.value.status == 404 and info.value.body == {"error": "no such container: nope"}
    with pytest.raises(ApiError) as info:
        c.request("POST", "/v1/containers", body={"image": "alpine"})
    assert info.value.status == 404
    c.request("POST", "/v1/containers", body={"image": "busybox:nyx", "name": "a"})
    with pytest.raises(ApiError) as info:
        c.request("POST", "/v1/containers", body={"image": "busybox:nyx", "name": "a"})
    assert info.value.status == 409
    with pytest.raises(ApiError) as info:
        c.request("DELETE", "/v1/containers/a")
    assert info.value.status == 409 and "running" in str(info.value)
    assert c.request("DELETE", "/v1/containers/a", params={"force": 1}) is None


def test_unknown_route_and_method(api: Path) -> None:
    status, _, body = raw(api, b"GET /v2/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 404 and "error" in json.loads(body)
    status, _, body = raw(api, b"PUT /v1/info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 405


def test_stop_wait_logs(api: Path, fake_sup: Any) -> None:
    c = Client(api)
    created = c.create({"image": "busybox:nyx"})
    assert b"".join(c.stream("GET", f"/v1/containers/{created['id']}/logs")) == (
        b"line one\nline two\n"
    )
    stopped = c.stop(created["id"], timeout=2)
    assert stopped["state"] == "stopped" and fake_sup.stopped == [(created["id"], 2.0)]
    assert c.wait(created["id"]) == {"exit_code": 137, "state": "stopped"}
    with pytest.raises(ApiError) as info:
        c.request("POST", f"/v1/containers/{created['id']}/stop", params={"timeout": "soon"})
    assert info.value.status == 400 and "timeout" in str(info.value)


def test_label_filter(api: Path) -> None:
    c = Client(api)
    c.create({"image": "busybox:nyx", "labels": {"nyx.stack": "a"}})
    c.create({"image": "busybox:nyx", "labels": {"nyx.stack": "b"}})
    got = c.request("GET", "/v1/containers", params={"label": "nyx.stack=a"})
    assert [x["labels"] for x in got] == [{"nyx.stack": "a"}]


def test_command_error_carries_exit_code(api: Path, fake_sup: Any) -> None:
    from nyx_cli.errors import CommandError

    fake_sup.fail_start = CommandError("container command not found: nope", 127)
    with pytest.raises(ApiError) as info:
        Client(api).create({"image": "busybox:nyx"})
    assert info.value.status == 400 and info.value.body["exit_code"] == 127


def test_images_load_tar_body(api: Path, fake_sup: Any, tmp_path: Path) -> None:
    tar = tmp_path / "img.tar"
    tar.write_bytes(b"pretend tar" * 1000)
    c = Client(api)
    assert c.load(tar)[0]["repo_tags"] == ["loaded:1"]
    assert fake_sup.loaded == [b"pretend tar" * 1000]
    assert not list((tmp_path / "state" / "tmp").iterdir())  # the upload was removed
    with pytest.raises(ApiError) as info:
        c.request("POST", "/v1/images/load", data=b"", headers={"Content-Type": "x"})
    assert info.value.status == 400 and "empty" in str(info.value)


def test_images_pull_and_501(api: Path, fake_sup: Any) -> None:
    c = Client(api)
    assert c.request("POST", "/v1/images/pull", body={"reference": "alpine:3"})["repo_tags"] == [
        "alpine:3"
    ]
    events = list(
        c.lines("POST", "/v1/images/pull", params={"progress": 1}, body={"reference": "a:1"})
    )
    assert [e.get("progress", {}).get("kind") for e in events[:2]] == ["resolve", "done"]
    assert events[-1]["image"]["repo_tags"] == ["a:1"]
    fake_sup.pull_available = False
    with pytest.raises(ApiError) as info:
        c.request("POST", "/v1/images/pull", body={"reference": "alpine:3"})
    assert info.value.status == 501 and "registry module" in str(info.value)
    with pytest.raises(ApiError) as info:
        c.request("POST", "/v1/images/pull", body={})
    assert info.value.status == 400


def test_images_list_and_delete(api: Path) -> None:
    c = Client(api)
    assert c.request("GET", "/v1/images")[0]["repo_tags"] == ["busybox:nyx"]
    assert c.request("DELETE", "/v1/images/busybox:nyx") is None
    with pytest.raises(ApiError) as info:
        c.request("DELETE", "/v1/images/other:1")
    assert info.value.status == 404


def test_networks(api: Path) -> None:
    c = Client(api)
    assert c.request("GET", "/v1/networks")[0]["default"] is True
    net = c.request("POST", "/v1/networks", body={"name": "back", "internal": True})
    assert net["internal"] is True and net["subnet"] == "10.89.0.0/24"
    with pytest.raises(ApiError) as info:
        c.request("POST", "/v1/networks", body={"name": "nyx"})
    assert info.value.status == 409
    with pytest.raises(ApiError) as info:
        c.request("POST", "/v1/networks", body={"internal": True})
    assert info.value.status == 400
    with pytest.raises(ApiError) as info:
        c.request("DELETE", "/v1/networks/back")
    assert info.value.status == 409 and "in use" in str(info.value)


def test_keep_alive_serves_several_requests(api: Path) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(api))
        f = s.makefile("rb")
        for _ in range(3):
            s.sendall(b"GET /v1/info HTTP/1.1\r\nHost: x\r\n\r\n")
            status = f.readline()
            assert b"200" in status
            length = 0
            while (line := f.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length"):
                    length = int(line.split(b":")[1])
            assert json.loads(f.read(length))["driver"] == "fake"


def test_error_status_by_kind() -> None:
    from nyx_cli import errors
    from nyx_cli.daemon._api import error_status
    from nyx_cli.errors import ImageDigestMismatchError, InvalidImageError
    from nyx_core.errors import AddressInUseError, PortConflictError

    assert error_status(errors.ImageNotFoundError("x")) == 404
    assert error_status(errors.UnauthorizedError("x")) == 401
    assert error_status(errors.UnsupportedCompressionError("zstd needs zstandard")) == 501
    assert error_status(errors.InvalidReferenceError("bad ref")) == 400
    assert error_status(InvalidImageError("bad tar")) == 400
    assert error_status(ImageDigestMismatchError("local archive")) == 400
    assert error_status(errors.DigestMismatchError("from the registry")) == 502
    assert error_status(errors.NoMatchingPlatformError("arm only")) == 502
    assert error_status(PortConflictError("8080 taken")) == 409
    assert error_status(AddressInUseError("static_ip 10.88.0.5 is already leased")) == 409
    assert error_status(RuntimeError("bug")) == 500
