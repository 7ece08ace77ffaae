"""The ``nyx`` client against the real API server with a fake supervisor (no root)."""

from __future__ import annotations

import json
import re
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


def test_run_interrupted_while_starting_stops_the_container(
    api: Path, fake_sup: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """^C that comes before the start's answer stops the container, never aborts the client."""
    import os
    import signal

    real_start = fake_sup.start

    def start(ref: str) -> dict[str, Any]:
        c = real_start(ref)
        os.kill(os.getpid(), signal.SIGINT)  # the user's ^C, while the answer is on its way
        return c

    monkeypatch.setattr(fake_sup, "start", start)
    r = nyx(api, "run", "--rm", "busybox:nyx", "sleep", "60")
    assert r.exit_code == 137, r.output
    assert "nyx: stopping" in r.output
    assert [cid for cid, _ in fake_sup.stopped] == list(fake_sup.specs)


def test_run_rm_keeps_the_output_of_a_container_gone_at_once(
    api: Path, fake_sup: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A container that prints, ends and is removed (--rm) before the start's answer is
    back: the client attached to its log before the start, so nothing is lost."""
    real_start = fake_sup.start

    def start(ref: str) -> dict[str, Any]:
        c = dict(real_start(ref))
        del fake_sup.containers[c["id"]]  # ended and removed at once: its log is gone
        return c

    monkeypatch.setattr(fake_sup, "start", start)
    monkeypatch.setattr(
        fake_sup, "wait", lambda ref, timeout=None: {"exit_code": 0, "state": "exited"}
    )
    r = nyx(api, "run", "--rm", "busybox:nyx", "cat", "/etc/motd")
    assert r.exit_code == 0, r.output
    assert "line one\nline two\n" in r.output


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
    assert "Stopped (137)" in nyx(api, "ps", "-a").output
    assert nyx(api, "rm", "web").exit_code == 0
    assert nyx(api, "inspect", "web").exit_code == 1


def test_stop_and_rm_of_several_try_every_container(api: Path, fake_sup: Any) -> None:
    """As docker's: several at once, every one tried, each printed in the order given, a
    failure one line on stderr and the exit code at the end (not the first failure's end)."""
    names = [f"c{i}" for i in range(12)]
    for name in names:
        assert nyx(api, "run", "-d", "--name", name, "busybox:nyx").exit_code == 0
    r = nyx(api, "stop", "-t", "0", *names[:5], "nope", *names[5:])
    assert r.exit_code == 125
    assert r.output.splitlines() == [*names[:5], "nyx: no such container: nope", *names[5:]]
    assert sorted(cid for cid, _t in fake_sup.stopped) == sorted(fake_sup.containers)
    r = nyx(api, "rm", "nope", *names)
    assert r.exit_code == 125 and r.output.splitlines()[1:] == names
    assert fake_sup.containers == {}


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


def test_run_networking_flags_reach_nyxd(api: Path, fake_sup: Any) -> None:
    args = ["--ip", "10.88.0.9", "--mac-address", "02:42:0A:58:00:09", "--domainname", "ex.test"]
    args += ["--ip6", "FD00:88::0009"]
    args += ["--add-host", "db:10.1.2.3", "--add-host", "gw:host-gateway", "--expose", "80"]
    args += ["--dns", "192.0.2.53", "--dns-search", "corp.test", "--dns-option", "ndots:2"]
    args += ["--sysctl", "net.ipv4.ip_unprivileged_port_start=80", "--network", "back"]
    r = nyx(api, "run", "-d", *args, "busybox:nyx")
    assert r.exit_code == 0, r.output
    spec = fake_sup.specs[r.output.strip()]
    assert (spec.network, spec.ipv4_address, spec.mac_address) == (
        "back",
        "10.88.0.9",
        "02:42:0a:58:00:09",
    )
    assert spec.ipv6_address == "fd00:88::9"
    assert spec.extra_hosts == ["db:10.1.2.3", "gw:host-gateway"]
    assert (spec.dns_servers, spec.dns_search, spec.dns_options) == (
        ["192.0.2.53"],
        ["corp.test"],
        ["ndots:2"],
    )
    assert spec.domainname == "ex.test" and spec.expose == ["80/tcp"]
    assert spec.sysctls == {"net.ipv4.ip_unprivileged_port_start": "80"}


@pytest.mark.parametrize("mode", ["host", "none", "container:db"])
def test_run_network_mode(api: Path, fake_sup: Any, mode: str) -> None:
    r = nyx(api, "run", "-d", "--network", mode, "busybox:nyx")
    assert r.exit_code == 0, r.output
    assert fake_sup.specs[r.output.strip()].network_mode == mode


def test_run_network_flags_are_checked(api: Path) -> None:
    r = nyx(api, "run", "-d", "--network", "host", "--network", "back", "busybox:nyx")
    assert r.exit_code == 125 and "--network host: a network mode cannot be combined" in r.output
    r = nyx(api, "run", "-d", "--network", "host", "-p", "80:80", "busybox:nyx")
    assert r.exit_code == 125 and "not with network_mode 'host'" in r.output
    r = nyx(api, "run", "-d", "--sysctl", "kernel.shmmax=1", "busybox:nyx")
    assert r.exit_code == 125 and "sysctls 'kernel.shmmax': only net.*" in r.output
    r = nyx(api, "run", "-d", "--ip", "10.0.0.1", "--network", "a", "--network", "b", "img")
    assert r.exit_code == 125 and "--ip/--ip6/--mac-address: give one --network" in r.output
    r = nyx(api, "run", "-d", "--ip6", "fd00::9", "--network", "a", "--network", "b", "img")
    assert r.exit_code == 125 and "--ip/--ip6/--mac-address: give one --network" in r.output
    r = nyx(api, "run", "-d", "--ip6", "10.0.0.9", "busybox:nyx")
    assert r.exit_code == 125 and "ipv6_address '10.0.0.9' is an IPv4 address" in r.output
    r = nyx(api, "run", "-d", "--add-host", "nocolon", "busybox:nyx")
    assert r.exit_code == 125 and "extra_hosts 'nocolon': must be NAME:ADDRESS" in r.output


def test_ps_and_inspect_show_exposed_ports(api: Path) -> None:
    nyx(api, "run", "-d", "--name", "web", "-p", "8080:80", "--expose", "9000", "busybox:nyx")
    row = nyx(api, "ps").output.splitlines()[1]
    assert row.endswith("8080:80/tcp,9000/tcp")
    assert json.loads(nyx(api, "inspect", "web").output)[0]["expose"] == ["9000/tcp"]


def test_run_restart_policy_and_health_flags_reach_nyxd(api: Path, fake_sup: Any) -> None:
    r = nyx(
        api, "run", "-d", "--name", "db", "--restart", "unless-stopped",
        "--health-cmd", "pg_isready -U app", "--health-interval", "1m30s",
        "--health-timeout", "500ms", "--health-retries", "2", "--health-start-period", "10s",
        "busybox:nyx",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    spec = next(iter(fake_sup.specs.values()))
    assert spec.restart == "unless-stopped"
    assert spec.healthcheck.model_dump(exclude_none=True) == {
        "test": ["CMD-SHELL", "pg_isready -U app"],
        "interval": 90.0,
        "timeout": 0.5,
        "retries": 2,
        "start_period": 10.0,
    }
    assert nyx(api, "run", "-d", "--no-healthcheck", "busybox:nyx").exit_code == 0
    assert list(fake_sup.specs.values())[-1].healthcheck.test == ["NONE"]
    assert list(fake_sup.specs.values())[-1].restart == "no"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--restart", "sometimes"], "restart policy 'sometimes' is not one of no, on-failure"),
        (["--restart", "on-failure:0"], "on-failure:N needs a retry count N >= 1"),
        (["--rm", "--restart", "always"], "restart 'always' and rm"),
        (["--health-interval", "30"], "duration '30': 30 needs a unit (e.g. 30s)"),
        (["--health-timeout", "2d"], "duration '2d': unknown unit 'd'"),
        (["--health-retries", "0"], "'0' is not a whole number >= 1"),
        (["--no-healthcheck", "--health-cmd", "x"], "--no-healthcheck conflicts with"),
    ],
)
def test_bad_restart_and_health_flags_are_one_clear_line(
    api: Path, fake_sup: Any, args: list[str], message: str
) -> None:
    r = nyx(api, "run", "-d", *args, "busybox:nyx")
    assert r.exit_code == 125 and message in r.output, r.output
    assert fake_sup.containers == {}


def test_ps_shows_docker_s_status_with_health_and_the_restart_count(
    api: Path, fake_sup: Any
) -> None:
    from datetime import UTC, datetime, timedelta

    def ago(seconds: float) -> str:
        return (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat(timespec="milliseconds")

    for name in ("up", "sick", "again", "done", "new"):
        nyx(api, "run", "-d", "--name", name, "busybox:nyx")
    c = {v["name"]: v for v in fake_sup.containers.values()}
    c["up"].update(started=ago(3.5), health={"status": "healthy"}, restart_count=2)
    c["sick"].update(started=ago(7200), health={"status": "starting"})
    c["again"].update(state="restarting", exit_code=1, finished=ago(0.2), restart_count=5)
    c["done"].update(state="exited", exit_code=0, finished=ago(65))
    c["new"].update(state="created")
    out = nyx(api, "ps", "-a").output
    rows = {line.split()[1]: line for line in out.splitlines()[1:]}
    header = out.splitlines()[0]
    assert header.split()[4:] == ["STATUS", "RESTARTS", "IPS", "PORTS"]
    assert re.search(r" Up 3 seconds \(healthy\) +2 ", rows["up"])
    assert re.search(r" Up 2 hours \(health: starting\) +0 ", rows["sick"])
    assert re.search(r" Restarting \(1\) Less than a second ago +5 ", rows["again"])
    assert re.search(r" Exited \(0\) About a minute ago +0 ", rows["done"])
    assert re.search(r" Created +0 ", rows["new"])
