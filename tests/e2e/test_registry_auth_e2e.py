"""Authenticated pulls through nyxd: ``nyx login`` stores the credentials where nyxd reads
them (nyxd's ``--registry-auth-file``, which ``nyx login`` asks nyxd for), then ``nyx pull``
through nyxd works; without them it fails with one clear line.

The registry is a real docker-registry with htpasswd (basic) authentication on the host
namespace's 127.0.0.1:5000; ``nyx login`` runs on that host (its namespace), as a user
would.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from nyxd_e2e_kit import BIN, Nyxd, assert_accounted

pytestmark = [pytest.mark.e2e, pytest.mark.kernel]

REGISTRY = "127.0.0.1:5000"
REF = f"{REGISTRY}/private/busybox:v1"
USER, PASSWORD = "alice", "s3cret-pw"


def _htpasswd(path: Path) -> None:
    """A bcrypt htpasswd line (crypt's blowfish; a subprocess: the module is deprecated)."""
    code = (
        "import crypt, sys; "
        "print(sys.argv[1] + ':' + crypt.crypt(sys.argv[2], crypt.mksalt(crypt.METHOD_BLOWFISH)))"
    )
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code, USER, PASSWORD],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    path.write_text(out)


@pytest.fixture
def private(nyxd_factory: Callable[..., Nyxd], busybox_tar: Path, tmp_path: Path) -> Iterator[Nyxd]:
    binary = Path("/usr/bin/docker-registry")
    if not binary.exists() or shutil.which("skopeo") is None:
        pytest.skip("needs docker-registry and skopeo")
    auth = tmp_path / "nyxd-auth" / "config.json"
    d = nyxd_factory("--registry-auth-file", str(auth))
    _htpasswd(tmp_path / "htpasswd")
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'storage'}\n"
        f"http:\n  addr: {REGISTRY}\n"
        f"auth:\n  htpasswd:\n    realm: nyx-test\n    path: {tmp_path / 'htpasswd'}\n"
    )
    reg = subprocess.Popen(
        ["nsenter", f"--net={d.ns.path}", "--", str(binary), "serve", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while "401" not in d.host("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                  f"http://{REGISTRY}/v2/").stdout:  # fmt: skip
            assert time.monotonic() < deadline, "registry did not start"
            time.sleep(0.1)
        push = d.host(
            "skopeo", "copy", "--dest-tls-verify=false", f"--dest-creds={USER}:{PASSWORD}",
            f"docker-archive:{busybox_tar}", f"docker://{REF}", timeout=120,
        )  # fmt: skip
        assert push.returncode == 0, push.stderr
        yield d
    finally:
        reg.terminate()
        reg.wait(10)


def _login(d: Nyxd, password: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``nyx login`` on nyxd's host (its namespace: the registry listens on its loopback)."""
    return subprocess.run(
        ["nsenter", f"--net={d.ns.path}", "--", str(BIN / "nyx"), "--socket", str(d.socket),
         "login", "-u", USER, "--password-stdin", REGISTRY],
        input=password + "\n", capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip


def test_nyx_login_then_pull_through_nyxd(private: Nyxd, tmp_path: Path) -> None:
    d = private
    auth = Path(d.client.info()["registry_auth_file"])
    assert auth == tmp_path / "nyxd-auth" / "config.json"
    # the client's own docker config is somewhere else: login must not write there
    client_home = tmp_path / "client-home"
    env = {**os.environ, "HOME": str(client_home), "DOCKER_CONFIG": str(client_home / ".d")}

    r = d.nyx("pull", REF, timeout=120)
    assert r.returncode == 125, r.stdout + r.stderr
    error = r.stderr.strip().splitlines()[-1]  # after the progress lines: one clear line
    assert error == (
        "nyx: registry 127.0.0.1:5000 requires a user name and password; "
        "log in with 'nyx login 127.0.0.1:5000'"
    ), r.stderr
    assert "Traceback" not in r.stderr

    bad = _login(d, "wrong", env)
    assert bad.returncode != 0 and "login to 127.0.0.1:5000 failed" in bad.stderr, bad.stderr
    assert not auth.exists()

    good = _login(d, PASSWORD, env)
    assert good.returncode == 0, good.stderr
    assert str(auth) in good.stdout
    assert stat.S_IMODE(auth.stat().st_mode) == 0o600
    assert REGISTRY in json.loads(auth.read_text())["auths"]
    assert not client_home.exists()

    r = d.nyx("pull", REF, timeout=120)
    assert r.returncode == 0, r.stderr
    r = d.nyx("run", "--rm", REF, "echo", "pulled with credentials")
    assert r.returncode == 0 and "pulled with credentials" in r.stdout, r.stderr
    assert_accounted(d)
