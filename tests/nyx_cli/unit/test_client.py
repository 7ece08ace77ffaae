"""The ``nyx`` client against the real API server with a fake supervisor (no root)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from nyx_cli.client import cli


def nyx(sock: Path | str, *args: str, input: bytes | None = None) -> Any:
    return CliRunner().invoke(cli, ["--socket", str(sock), *args], input=input)


def test_missing_daemon_is_one_line_and_125(tmp_path: Path) -> None:
    r = nyx(tmp_path / "none.sock", "ps")
    assert r.exit_code == 125
    assert r.output.count("\n") == 1 and "no such socket" in r.output


def test_refused_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "dead.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()  # a socket file nobody listens on
    r = nyx(path, "info")
    assert r.exit_code == 125 and "connection refused" in r.output


def test_socket_from_env(monkeypatch: pytest.MonkeyPatch, api: Path) -> None:
    monkeypatch.setenv("NYXD_SOCKET", str(api))
    r = CliRunner().invoke(cli, ["info"])
    assert r.exit_code == 0 and "driver: fake" in r.output


def test_usage_error_is_125(api: Path) -> None:
    r = nyx(api, "run")
    assert r.exit_code == 125 and "IMAGE" in r.output
    r = nyx(api, "frobnicate")
    assert r.exit_code == 125


def test_bad_port_names_the_value(api: Path) -> None:
    r = nyx(api, "run", "-d", "-p", "80", "busybox:nyx")
    assert r.exit_code == 125 and "'80'" in r.output and "host port missing" in r.output


def test_run_detached_prints_id(api: Path, fake_sup: Any) -> None:
    r = nyx(
        api,
        "run",
        "-d",
        "--name",
        "web",
        "--hostname",
        "web",
        "-p",
        "8080:80",
        "-e",
        "A=1",
        "-l",
        "k=v",
        "busybox:nyx",
        "httpd",
        "-f",
        "-p",
        "80",
    )
    assert r.exit_code == 0, r.output
    cid = r.output.strip()
    spec = fake_sup.specs[cid]
    assert spec.command == ["httpd", "-f", "-p", "80"]
    assert [str(p) for p in spec.ports] == ["8080:80/tcp"]
    assert spec.env == {"A": "1"} and spec.labels == {"k": "v"} and spec.hostname == "web"


def test_run_foreground_prints_json_output_and_exit_code(api: Path, fake_sup: Any) -> None:
    fake_sup.exit_code = 3
    fake_sup.exited.set()
    r = nyx(api, "run", "--rm", "--dns-off", "busybox:nyx", "sh", "-c", "exit 3")
    assert r.exit_code == 3, r.output
    start = r.output.index("{")
    end = r.output.index("\n}\n") + 2
    obj = json.loads(r.output[start:end])
    assert obj["state"] == "running"
    assert "line one\nline two\n" in r.output[end:]
    spec = fake_sup.specs[obj["id"]]
    assert spec.rm is True and spec.dns is False


def test_run_command_not_found_is_127(api: Path, fake_sup: Any) -> None:
    from nyx_cli.errors import CommandError

    fake_sup.fail_start = CommandError("container command not found: nope", 127)
    r = nyx(api, "run", "--rm", "busybox:nyx", "nope")
    assert r.exit_code == 127 and "not found" in r.output
    assert fake_sup.containers == {}  # --rm removed the created container
    r = nyx(api, "run", "-d", "busybox:nyx", "nope")
    assert r.exit_code == 127


def test_run_unknown_image_is_125(api: Path) -> None:
    r = nyx(api, "run", "-d", "alpine")
    assert r.exit_code == 125 and r.output == "nyx: no such image: alpine\n"


def test_ps_stop_rm(api: Path, fake_sup: Any) -> None:
    cid = nyx(api, "run", "-d", "--name", "web", "-p", "8080:80", "busybox:nyx").output.strip()
    r = nyx(api, "ps")
    assert "web" in r.output and "8080:80/tcp" in r.output and cid[:12] in r.output
    assert nyx(api, "ps", "-q").output.strip() == cid[:12]
    r = nyx(api, "rm", "web")
    assert r.exit_code == 125 and "running" in r.output
    assert nyx(api, "stop", "-t", "1", "web").exit_code == 0
    assert fake_sup.stopped == [(cid, 1.0)]
    assert nyx(api, "ps").output.count("\n") == 1  # header only
    assert "stopped (137)" in nyx(api, "ps", "-a").output
    assert nyx(api, "rm", "web").exit_code == 0
    assert nyx(api, "inspect", "web").exit_code == 1


def test_logs_and_inspect(api: Path) -> None:
    nyx(api, "run", "-d", "--name", "web", "busybox:nyx")
    assert nyx(api, "logs", "web").output == "line one\nline two\n"
    out = json.loads(nyx(api, "inspect", "web").output)
    assert out[0]["name"] == "web"
    assert json.loads(nyx(api, "inspect", "busybox:nyx").output)[0]["repo_tags"] == ["busybox:nyx"]


def test_images_load_pull_info(api: Path, fake_sup: Any, tmp_path: Path) -> None:
    r = nyx(api, "images")
    assert "busybox" in r.output and "nyx" in r.output and "2.2MB" in r.output
    tar = tmp_path / "i.tar"
    tar.write_bytes(b"x" * 100)
    r = nyx(api, "load", "-i", str(tar))
    assert r.exit_code == 0 and r.output == "Loaded image: loaded:1\n"
    r = nyx(api, "load", input=b"y" * 10)
    assert r.exit_code == 0 and fake_sup.loaded[-1] == b"y" * 10
    r = nyx(api, "pull", "alpine:3")
    assert r.exit_code == 0 and "sha256:" + "ef" * 32 in r.output
    assert "resolving alpine:3" in r.output
    fake_sup.pull_available = False
    r = nyx(api, "pull", "alpine:3")
    assert r.exit_code == 125 and "not available" in r.output
    r = nyx(api, "info")
    assert "driver: fake" in r.output


def test_networks(api: Path) -> None:
    assert "10.88.0.0/16" in nyx(api, "network", "ls").output
    assert nyx(api, "network", "create", "--internal", "back").output == "back\n"
    r = nyx(api, "network", "rm", "back")
    assert r.exit_code == 125 and "in use" in r.output
