"""nyxd end to end: real runc containers, native networking, embedded DNS, in test namespaces."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from nyxd_e2e_kit import BIN, Nyxd

pytestmark = [pytest.mark.e2e, pytest.mark.kernel]

HTTPD = ["httpd", "-f", "-p", "80", "-h", "/www"]
PAGE = "hello from nyx"


def wait_for(pred: Callable[[], Any], timeout: float = 20, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def assert_clean(d: Nyxd) -> None:
    """No container process, veth, netns file, firewall entry or mount left.

    Firewall: table ``ip nyx``'s per-container maps and sets are empty, and no container
    address (anything in nyxd's subnet but the network and gateway addresses) is left in
    any table (the CNI driver's iptables-nft chains included). Mounts: read in nyxd's own
    mount namespace (its netns and rootfs mounts are invisible from the test's).
    """
    assert d.runc_list() == []
    assert d.veths() == []
    assert not list((d.run / "netns").glob("*"))
    elements = d.nyx_elements()
    for name in ("ports_any", "ports_ip", "internal"):
        assert elements.get(name, []) == [], f"{name}: {elements[name]}"
    text = d.host("nft", "list", "ruleset").stdout
    left = {
        m.group(0)
        for m in re.finditer(rf"(?<![\d.]){re.escape(d.subnet_prefix)}(\d+)\b", text)
        if m.group(1) not in ("0", "1", "255")
    }
    assert not left, f"container addresses left in the ruleset: {sorted(left)}"
    mounts = [line for line in d.mountinfo().splitlines() if str(d.root) in line]
    assert not mounts, "\n".join(mounts)


def test_run_publish_resolve_stop_rm(nyxd: Nyxd, external_ns: Any) -> None:
    ext, host_ip = external_ns
    r = nyxd.nyx(
        "run", "-d", "--name", "web", "--hostname", "web", "-p", "8080:80", "busybox:nyx", *HTTPD
    )
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    web = nyxd.client.request("GET", "/v1/containers/web")
    assert web["id"] == cid and web["state"] == "running"
    assert web["ips"][0].startswith(f"10.231.{nyxd.octet}.")

    # published port: from the host namespace's localhost and from an external namespace
    local = wait_for(
        lambda: PAGE in nyxd.host("curl", "-s", "-m", "2", "http://127.0.0.1:8080/").stdout,
        what="127.0.0.1:8080",
    )
    assert local
    out = ext.run(["curl", "-s", "-m", "3", f"http://{host_ip}:8080/"], check=False).stdout
    assert PAGE in out

    # name resolution between two containers (embedded DNS)
    r = nyxd.nyx("run", "--rm", "busybox:nyx", "wget", "-qO-", "http://web.nyxd.local/")
    assert r.returncode == 0, r.stderr
    assert PAGE in r.stdout
    r = nyxd.nyx("run", "--rm", "busybox:nyx", "cat", "/etc/resolv.conf")
    assert f"nameserver {nyxd.gateway}" in r.stdout

    r = nyxd.nyx("rm", "web")
    assert r.returncode == 125 and "running" in r.stderr
    assert nyxd.nyx("stop", "-t", "1", "web").returncode == 0
    stopped = nyxd.client.request("GET", "/v1/containers/web")
    assert stopped["state"] == "stopped" and stopped["pid"] is None
    assert nyxd.nyx("rm", "web").returncode == 0
    assert nyxd.client.request("GET", "/v1/containers", params={"all": 1}) == []
    assert_clean(nyxd)
    assert nyxd.host("curl", "-s", "-m", "1", "http://127.0.0.1:8080/").returncode != 0


def test_exit_code_and_output(nyxd: Nyxd) -> None:
    r = nyxd.nyx("run", "--rm", "busybox:nyx", "sh", "-c", "echo out; exit 7")
    assert r.returncode == 7
    assert r.stdout.rstrip().endswith("out")
    r = nyxd.nyx("run", "--rm", "busybox:nyx", "no-such-command")
    assert r.returncode == 127, r.stderr
    assert_clean(nyxd)


def _limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError(f"no 'Max open files' in /proc/{pid}/limits")


def test_nyxd_raises_its_descriptor_limit_and_containers_keep_the_one_it_had(
    nyxd_factory: Callable[..., Nyxd],
) -> None:
    """A shell's 1,024 would stop nyxd at a few hundred containers (a pidfd of each init and
    monitor, a socket per published port): nyxd raises its soft limit to the hard one, as Go
    daemons do; its containers still get the limits nyxd was started with."""
    d = nyxd_factory(nofile=(1024, 8192))
    assert d.proc is not None
    assert "nyxd" in Path(f"/proc/{d.proc.pid}/cmdline").read_bytes().decode(errors="replace")
    assert _limits(d.proc.pid) == (8192, 8192)
    r = d.nyx("run", "--rm", "busybox:nyx", "sh", "-c", "ulimit -n; ulimit -Hn")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-2:] == ["1024", "8192"], r.stdout


def test_foreground_run_stopped_by_sigint(nyxd: Nyxd) -> None:
    script = 'trap "exit 143" TERM; echo ready; while :; do sleep 0.1; done'
    proc = subprocess.Popen(
        [
            str(BIN / "nyx"),
            "--socket",
            str(nyxd.socket),
            "run",
            "--name",
            "fg",
            "busybox:nyx",
            "sh",
            "-c",
            script,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: (
                nyxd.client.request("GET", "/v1/containers")
                and "ready"
                in b"".join(nyxd.client.stream("GET", "/v1/containers/fg/logs")).decode()
            ),
            what="fg running",
        )
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert json.loads(out[: out.index("\n}\n") + 2])["name"] == "fg"
    fg = nyxd.client.request("GET", "/v1/containers/fg")
    assert fg["state"] == "stopped" and fg["exit_code"] == 143
    assert_clean(nyxd)


def test_dns_off_no_resolv_conf_override(nyxd_factory: Callable[..., Nyxd]) -> None:
    d = nyxd_factory("--dns", "off")
    assert d.client.info()["dns"] == "off"
    r = d.nyx("run", "--rm", "busybox:nyx", "sh", "-c", "cat /etc/resolv.conf; true")
    assert r.returncode == 0
    assert "nyxd" not in r.stdout and d.gateway not in r.stdout
    assert '"dns started"' not in d.log.read_text()


def test_kill9_then_restart_leaves_no_leak(nyxd: Nyxd) -> None:
    """Each nyxd start has its own mount namespace here, so the crashed nyxd's netns mounts
    are gone: the restarted nyxd stops the leftovers and tears everything down."""
    for i in range(2):
        r = nyxd.nyx("run", "-d", "--name", f"c{i}", "-p", f"{8090 + i}:80", "busybox:nyx", *HTTPD)
        assert r.returncode == 0, r.stderr
    assert len(nyxd.veths()) == 2
    nyxd.kill9()
    assert len(nyxd.runc_list()) == 2  # the containers outlived nyxd
    nyxd.start()
    rows = nyxd.client.request("GET", "/v1/containers", params={"all": 1})
    assert sorted((c["name"], c["state"]) for c in rows) == [("c0", "exited"), ("c1", "exited")]
    assert_clean(nyxd)
    # and it still works, the same names and ports can be reused after rm
    assert nyxd.nyx("rm", "c0", "c1").returncode == 0
    r = nyxd.nyx("run", "-d", "--name", "c0", "-p", "8090:80", "busybox:nyx", *HTTPD)
    assert r.returncode == 0, r.stderr
    assert wait_for(
        lambda: PAGE in nyxd.host("curl", "-s", "-m", "2", "http://127.0.0.1:8090/").stdout,
        what="8090 after restart",
    )
    assert nyxd.stop() == 0
    assert nyxd.runc_list() == [] and nyxd.veths() == []


def test_kill9_then_restart_readopts_running_containers(
    nyxd_factory: Callable[..., Nyxd],
) -> None:
    """As on a real host: nyxd's mounts survive its crash, the restarted nyxd adopts the
    containers (port still published, DNS names registered again) and stops them cleanly."""
    d = nyxd_factory(shared_mounts=True)
    for i in range(2):
        r = d.nyx(
            "run", "-d", "--name", f"c{i}", "--hostname", f"c{i}", "-p", f"{8090 + i}:80",
            "busybox:nyx", *HTTPD,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
    d.kill9()
    d.start()
    rows = d.client.request("GET", "/v1/containers", params={"all": 1})
    assert sorted((c["name"], c["state"]) for c in rows) == [("c0", "running"), ("c1", "running")]
    assert wait_for(
        lambda: PAGE in d.host("curl", "-s", "-m", "2", "http://127.0.0.1:8090/").stdout,
        what="8090 after restart",
    )
    r = d.nyx("run", "--rm", "busybox:nyx", "wget", "-qO-", "http://c1.nyxd.local/")
    assert PAGE in r.stdout, r.stderr
    assert d.nyx("stop", "-t", "1", "c0").returncode == 0
    assert d.client.request("GET", "/v1/containers/c0")["state"] == "stopped"
    assert len(d.veths()) == 1
    assert d.stop() == 0  # SIGTERM stops the other adopted one too
    assert d.runc_list() == [] and d.veths() == []
    assert not list((d.run / "netns").glob("*"))


def test_twenty_in_parallel_distinct_ips_all_answer(nyxd: Nyxd) -> None:
    spec = {"image": "busybox:nyx", "command": HTTPD}

    def create(i: int) -> dict[str, Any]:
        return nyxd.client.create({**spec, "name": f"p{i}"})

    with ThreadPoolExecutor(max_workers=20) as pool:
        made = list(pool.map(create, range(20)))
    ips = [c["ips"][0] for c in made]
    assert len(set(ips)) == 20
    probe = (
        "import sys, urllib.request\n"
        "bad = []\n"
        "for ip in sys.argv[1:]:\n"
        "    for _ in range(50):\n"
        "        try:\n"
        "            if b'hello' in urllib.request.urlopen(f'http://{ip}/', timeout=2).read():\n"
        "                break\n"
        "        except OSError:\n"
        "            pass\n"
        "        import time; time.sleep(0.1)\n"
        "    else:\n"
        "        bad.append(ip)\n"
        "print(' '.join(bad))\n"
    )
    r = nyxd.host("python3", "-c", probe, *ips, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "", r.stdout + r.stderr

    def remove(c: dict[str, Any]) -> None:
        nyxd.client.request("DELETE", f"/v1/containers/{c['id']}", params={"force": 1})

    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(remove, made))
    assert_clean(nyxd)


def test_pull_from_a_registry_then_run(nyxd: Nyxd, busybox_tar: Path, tmp_path: Path) -> None:
    registry = Path("/usr/bin/docker-registry")
    if not registry.exists() or shutil.which("skopeo") is None:
        pytest.skip("needs docker-registry and skopeo")
    storage = tmp_path / "registry"
    storage.mkdir()
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n"
        "http:\n  addr: 127.0.0.1:5000\n"
    )
    reg = subprocess.Popen(
        ["nsenter", f"--net={nyxd.ns.path}", "--", str(registry), "serve", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ref = "127.0.0.1:5000/demo/busybox:v1"
    try:
        wait_for(
            lambda: nyxd.host("curl", "-s", "-m", "1", "http://127.0.0.1:5000/v2/").returncode == 0,
            what="registry",
        )
        push = nyxd.host(
            "skopeo", "copy", "--dest-tls-verify=false", f"docker-archive:{busybox_tar}",
            f"docker://{ref}", timeout=120,
        )  # fmt: skip
        assert push.returncode == 0, push.stderr
        # insecure is nyxd's configuration: the client flag is gone, the API refuses it for a
        # registry nyxd was not started with, before any traffic
        r = nyxd.nyx("pull", "--insecure", ref)
        assert r.returncode == 125 and "nyxd with --insecure-registry" in r.stderr, r.stderr
        from nyx_cli.client._http import ApiError

        other = "registry.test:5000/demo/busybox:v1"
        with pytest.raises(ApiError) as info:
            nyxd.client.request(
                "POST", "/v1/images/pull", body={"reference": other, "insecure": True}
            )
        assert info.value.status == 400
        assert "registry.test:5000" in str(info.value) and "--insecure-registry" in str(info.value)
        # 127.0.0.1 is loopback: plain HTTP without configuration, as in docker
        r = nyxd.nyx("pull", ref, timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip().startswith("sha256:")
        assert ref in [t for i in nyxd.client.request("GET", "/v1/images") for t in i["repo_tags"]]
        r = nyxd.nyx("run", "--rm", ref, "echo", "pulled and running")
        assert r.returncode == 0 and "pulled and running" in r.stdout, r.stderr
    finally:
        reg.terminate()
        reg.wait(10)
    assert_clean(nyxd)


def test_cni_driver_runs_publishes_and_leaves_dns_to_cni(
    nyxd_factory: Callable[..., Nyxd], tmp_path: Path
) -> None:
    if not Path("/usr/lib/cni/bridge").exists() or shutil.which("iptables") is None:
        pytest.skip("needs containernetworking-plugins and iptables")
    conf = tmp_path / "cni-conf"
    conf.mkdir()
    d = nyxd_factory(
        "--net-driver", "cni", "--cni-bin-dir", "/usr/lib/cni", "--cni-conf-dir", str(conf)
    )
    assert d.client.info()["driver"] == "cni"
    r = d.nyx("run", "-d", "--name", "web", "-p", "8080:80", "busybox:nyx", *HTTPD)
    assert r.returncode == 0, r.stderr
    assert wait_for(
        lambda: PAGE in d.host("curl", "-s", "-m", "2", "http://127.0.0.1:8080/").stdout,
        what="8080 through the CNI portmap plugin",
    )
    r = d.nyx("run", "--rm", "busybox:nyx", "cat", "/etc/resolv.conf")
    assert r.returncode == 0 and d.gateway not in r.stdout  # --dns auto + cni: CNI side
    assert d.nyx("rm", "-f", "web").returncode == 0
    assert_clean(d)
