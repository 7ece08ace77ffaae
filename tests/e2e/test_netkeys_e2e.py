"""E2E: a container's networking keys with real runc and the native driver (issue 14).

``nyx run --network none|host|container:NAME``, ``--ip``/``--mac-address`` honoured and a
conflicting address refused, ``--add-host``/``--dns*``/``--domainname`` in the container's
files, ``--sysctl`` in its own namespace only; and a compose stack with ``network_mode:
service:``, ``extra_hosts``/``dns``, ``ipv4_address`` and an external network that ``down``
keeps. nyxd runs in the kit's throwaway host namespace (tests/e2e/nyxd_e2e_kit.py).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from nyxd_e2e_kit import Nyxd
from test_nyxd_e2e import assert_clean, wait_for

from nyx_cli.client._http import ApiError
from nyx_core.testing import HOST_LINKS

pytestmark = [pytest.mark.e2e, pytest.mark.kernel]

IMAGE = "busybox:nyx"


def _ok(r: subprocess.CompletedProcess[str]) -> str:
    """The output of a successful ``nyx`` (a foreground run's: after its container JSON)."""
    assert r.returncode == 0, f"exit {r.returncode}: {r.stdout}{r.stderr}"
    out = r.stdout
    if out.startswith("{\n"):
        out = out[out.index("\n}\n") + 3 :]
    return out


def _links(text: str) -> dict[str, str]:
    """``ip -o link`` output: name -> the flags."""
    out = {}
    for line in text.splitlines():
        _, name, rest = line.split(":", 2)
        out[name.strip().partition("@")[0]] = rest.split(">")[0]
    return out


def _host_sysctl(d: Nyxd, key: str) -> str:
    return d.host("cat", "/proc/sys/" + key.replace(".", "/")).stdout.strip()


# ------------------------------------------------------------------ nyx run


def test_network_none_has_lo_only_and_host_sees_the_hosts_links(nyxd: Nyxd) -> None:
    links = _links(_ok(nyxd.nyx("run", "--rm", "--network", "none", IMAGE, "ip", "-o", "link")))
    assert list(links) == ["lo"] and "UP" in links["lo"], links
    addrs = _ok(nyxd.nyx("run", "--rm", "--network", "none", IMAGE, "ip", "-o", "addr"))
    assert "127.0.0.1/8" in addrs and "eth0" not in addrs
    seen = _ok(nyxd.nyx("run", "--rm", "--network", "host", IMAGE, "ip", "-o", "link"))
    host = {link["ifname"] for link in nyxd.ns.ipj("link", "show")}
    assert set(_links(seen)) == host and set(HOST_LINKS) <= host, (seen, host)
    assert_clean(nyxd)


def test_ip_and_mac_are_honoured_and_a_conflicting_ip_refused(nyxd: Nyxd) -> None:
    ip = f"{nyxd.subnet_prefix}50"
    cid = _ok(
        nyxd.nyx(
            "run",
            "-d",
            "--name",
            "fixed",
            "--ip",
            ip,
            "--mac-address",
            "02:42:0a:e7:00:32",
            IMAGE,
            "sleep",
            "600",
        )
    ).strip()
    got = nyxd.client.request("GET", f"/v1/containers/{cid}")
    assert got["ips"] == [ip]
    inside = _ok(nyxd.nyx("run", "--rm", "--network", "container:fixed", IMAGE, "ip", "addr"))
    assert f"inet {ip}/24" in inside and "02:42:0a:e7:00:32" in inside
    veths = nyxd.veths()
    r = nyxd.nyx("run", "-d", "--name", "clash", "--ip", ip, IMAGE, "sleep", "600")
    assert r.returncode == 125 and f"static_ip {ip} is already leased" in r.stderr, r.stderr
    # a conflict, as a published port in use is: 409 through the API
    with pytest.raises(ApiError) as info:
        nyxd.client.create({"image": IMAGE, "name": "clash", "ipv4_address": ip})
    assert info.value.status == 409 and "already leased" in str(info.value), info.value
    assert nyxd.veths() == veths
    names = [c["name"] for c in nyxd.client.request("GET", "/v1/containers", params={"all": 1})]
    assert names == ["fixed"]
    _ok(nyxd.nyx("rm", "-f", "fixed"))
    assert_clean(nyxd)


def test_hosts_resolv_conf_and_domainname_land_in_the_files(nyxd: Nyxd) -> None:
    script = "cat /etc/hosts; echo ---; cat /etc/resolv.conf; echo ---; "
    script += "cat /proc/sys/kernel/domainname; hostname"
    out = _ok(
        nyxd.nyx(
            "run",
            "--rm",
            "--hostname",
            "web",
            "--domainname",
            "example.test",
            "--add-host",
            "db.local:10.1.2.3",
            "--add-host",
            "gw:host-gateway",
            "--dns",
            "192.0.2.53",
            "--dns-search",
            "corp.test",
            "--dns-option",
            "ndots:2",
            IMAGE,
            "sh",
            "-c",
            script,
        )
    )
    hosts, resolv, names = out.split("---\n")[-3:]
    assert "\tweb.example.test web" in hosts
    assert "10.1.2.3\tdb.local" in hosts and f"{nyxd.gateway}\tgw" in hosts
    # embedded DNS first (the policy gives a native container embedded DNS), then ours
    assert resolv.splitlines() == [
        f"nameserver {nyxd.gateway}",
        "nameserver 192.0.2.53",
        "search nyxd.local corp.test",
        "options ndots:2",
    ], resolv
    assert names.split() == ["example.test", "web"]


def test_sysctls_are_the_containers_own(nyxd: Nyxd) -> None:
    key = "net.ipv4.ip_unprivileged_port_start"
    before = _host_sysctl(nyxd, key)
    assert before != "80"
    out = _ok(
        nyxd.nyx(
            "run",
            "--rm",
            "--sysctl",
            f"{key}=80",
            "--sysctl",
            "net.ipv4.tcp_syncookies=0",
            IMAGE,
            "cat",
            "/proc/sys/net/ipv4/ip_unprivileged_port_start",
            "/proc/sys/net/ipv4/tcp_syncookies",
        )
    )
    assert out.split()[-2:] == ["80", "0"]
    assert _host_sysctl(nyxd, key) == before
    r = nyxd.nyx("run", "--rm", "--sysctl", "net.core.netdev_max_backlog=5", IMAGE, "true")
    assert r.returncode == 125
    assert "'net.core.netdev_max_backlog': no such sysctl in a container's network" in r.stderr
    r = nyxd.nyx("run", "--rm", "--sysctl", "kernel.shmmax=5", IMAGE, "true")
    assert r.returncode == 125 and "only net.* sysctls" in r.stderr
    assert nyxd.client.request("GET", "/v1/containers", params={"all": 1}) == []
    assert_clean(nyxd)


def test_container_mode_shares_localhost_and_holds_its_owner(nyxd: Nyxd) -> None:
    script = (
        "mkdir -p /www && echo local-only > /www/index.html && httpd -f -p 127.0.0.1:8000 -h /www"
    )
    _ok(nyxd.nyx("run", "-d", "--name", "db", IMAGE, "sh", "-c", script))
    _ok(nyxd.nyx("run", "-d", "--name", "side", "--network", "container:db", IMAGE, "sleep", "600"))
    page = wait_for(
        lambda: (
            "local-only"
            in nyxd.nyx(
                "run",
                "--rm",
                "--network",
                "container:db",
                IMAGE,
                "wget",
                "-qO-",
                "http://127.0.0.1:8000/",
            ).stdout
        ),
        what="db's 127.0.0.1:8000 from its netns",
    )
    assert page
    # another container of the network does not see db's localhost
    r = nyxd.nyx("run", "--rm", IMAGE, "wget", "-T", "2", "-qO-", "http://127.0.0.1:8000/")
    assert "local-only" not in r.stdout
    r = nyxd.nyx("rm", "-f", "db")
    assert r.returncode == 125 and "'db' is the network of 'side'" in r.stderr
    assert nyxd.client.request("GET", "/v1/containers/db")["state"] == "running"
    _ok(nyxd.nyx("stop", "-t", "1", "db"))
    wait_for(
        lambda: nyxd.client.request("GET", "/v1/containers/side")["state"] != "running",
        what="side to stop with db",
    )
    _ok(nyxd.nyx("rm", "side", "db"))
    assert_clean(nyxd)


# ------------------------------------------------------------------ compose


STACK = """
name: netkeys
services:
  db:
    image: busybox:nyx
    networks:
      shared: {{ipv4_address: {ip}}}
    extra_hosts: ["db.local:10.1.2.3", "gw:host-gateway"]
    dns: [192.0.2.53]
    dns_search: [corp.test]
    command:
      - sh
      - -c
      - |
        cat /etc/hosts; echo ---; cat /etc/resolv.conf; echo ---
        mkdir -p /www && echo db-local > /www/index.html
        httpd -f -p 127.0.0.1:8000 -h /www
  sidecar:
    image: busybox:nyx
    network_mode: service:db
    command:
      - sh
      - -c
      - |
        until wget -qO- http://127.0.0.1:8000/; do sleep 0.2; done
        sleep 600
networks:
  shared:
    external: true
    name: outside
"""

CLASH = """
name: clash
services:
  other:
    image: busybox:nyx
    networks:
      shared: {{ipv4_address: {ip}}}
    command: [sleep, "600"]
networks:
  shared: {{external: true, name: outside}}
"""


def _compose(d: Nyxd, work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return d.nyx("compose", *args, timeout=180, cwd=work)


def _logs(d: Nyxd, name: str) -> str:
    return d.nyx("logs", name).stdout


def test_compose_network_keys_on_a_real_stack(nyxd: Nyxd, tmp_path: Path) -> None:
    _ok(nyxd.nyx("network", "create", "--subnet", "10.89.77.0/24", "outside"))
    ip = "10.89.77.20"
    work, clash = tmp_path / "netkeys", tmp_path / "clash"
    work.mkdir()
    clash.mkdir()
    (work / "compose.yaml").write_text(STACK.format(ip=ip))
    (clash / "compose.yaml").write_text(CLASH.format(ip=ip))
    try:
        up = _compose(nyxd, work, "up", "-d")
        assert up.returncode == 0, up.stdout + up.stderr
        assert "Network outside  External" in up.stdout
        db = nyxd.client.request("GET", "/v1/containers/netkeys-db-1")
        assert db["ips"] == [ip] and db["networks"] == ["outside"]
        # the two services share localhost: the sidecar reaches db's 127.0.0.1:8000
        wait_for(lambda: "db-local" in _logs(nyxd, "netkeys-sidecar-1"), what="sidecar")
        hosts, resolv = _logs(nyxd, "netkeys-db-1").split("---\n")[:2]
        assert "10.1.2.3\tdb.local" in hosts and "10.89.77.1\tgw" in hosts
        assert f"{ip}\tdb" in hosts
        assert resolv.splitlines()[:2] == [f"nameserver {nyxd.gateway}", "nameserver 192.0.2.53"]
        assert "corp.test" in resolv
        # a second stack asking for the same address is refused, and undone
        refused = _compose(nyxd, clash, "up", "-d")
        assert refused.returncode == 125
        assert f"service other: static_ip {ip} is already leased" in refused.stderr
        names = {c["name"] for c in nyxd.client.request("GET", "/v1/containers")}
        assert names == {"netkeys-db-1", "netkeys-sidecar-1"}
        # down removes the joining service first and leaves the external network
        down = _compose(nyxd, work, "down", "-t", "1")
        assert down.returncode == 0, down.stdout + down.stderr
        nets = [n["name"] for n in nyxd.client.request("GET", "/v1/networks")]
        assert "outside" in nets
    finally:
        _compose(nyxd, work, "down", "-t", "0")
        _compose(nyxd, clash, "down", "-t", "0")
        deadline = time.monotonic() + 10
        while nyxd.nyx("network", "rm", "outside").returncode != 0:
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert_clean(nyxd)
