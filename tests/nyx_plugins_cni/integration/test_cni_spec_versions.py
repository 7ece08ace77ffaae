"""The distro's real CNI plugins (they speak spec 0.1.0 to 1.0.0): nyx negotiates 1.0.0
for a conflist that offers 1.1.0, and never sends them ``GC`` or ``STATUS`` (1.1.0
operations, SPEC.md Section 2), which they would refuse.

Every plugin is the real binary behind a spy that logs what it was asked (``CNI_COMMAND``
and the request's ``cniVersion``) and passes the request on untouched. GC and STATUS
themselves are tested against the fakes (unit/test_cni_spec_fakes.py, unit/test_cni_driver.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nyx_core import NyxSettings, PluginSettings
from nyx_core.testing import Netns
from nyx_plugins_cni import CniDriver, CniSettings

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(not Path("/usr/lib/cni/bridge").exists(), reason="needs CNI plugins"),
]

DEBIAN_CNI = Path("/usr/lib/cni")
SPY = """#!{python} -S
import json, os, subprocess, sys
data = sys.stdin.buffer.read()
try:
    version = json.loads(data).get("cniVersion")
except ValueError:
    version = None
with open({log!r}, "a") as f:
    f.write(json.dumps({{"plugin": {name!r}, "cmd": os.environ.get("CNI_COMMAND"),
                        "cniVersion": version}}) + "\\n")
done = subprocess.run([{real!r}], input=data, capture_output=True)
sys.stdout.buffer.write(done.stdout)
sys.stderr.buffer.write(done.stderr)
sys.exit(done.returncode)
"""


@pytest.fixture
def spy_dir(tmp_path: Path) -> Path:
    spies = tmp_path / "spy-bin"
    spies.mkdir()
    for real in DEBIAN_CNI.iterdir():
        spy = spies / real.name
        spy.write_text(
            SPY.format(python=sys.executable, log=str(tmp_path / "calls.jsonl"),
                       name=real.name, real=str(real))
        )  # fmt: skip
        spy.chmod(0o755)
    return spies


@pytest.fixture
def nyx_plugin_settings(tmp_path: Path, spy_dir: Path) -> list[PluginSettings]:
    return [CniSettings(bin_dir=spy_dir, conf_dir=tmp_path / "net.d")]


def _calls(tmp_path: Path) -> list[dict[str, Any]]:
    log = tmp_path / "calls.jsonl"
    return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []


def test_real_plugins_get_1_0_0_and_never_gc_or_status(
    nyx_settings: NyxSettings,
    nyx_in_host: Netns,
    nyx_container_ns: Callable[[], Netns],
    tmp_path: Path,
) -> None:
    conf = {
        "cniVersion": "1.1.0",
        "cniVersions": ["0.4.0", "1.0.0", "1.1.0"],
        "name": nyx_settings.network,
        "plugins": [
            {
                "type": "bridge",
                "bridge": "nyxt2",
                "isGateway": True,
                "ipMasq": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": str(nyx_settings.container_subnet)}]],
                    "dataDir": str(nyx_settings.state_dir / "leases"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    conf_dir = nyx_settings.plugin(CniSettings).conf_dir
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "10-spec.conflist").write_text(json.dumps(conf))
    d = CniDriver(nyx_settings)
    info = d.ensure_network()
    try:
        assert info["cniVersion"] == "1.0.0"  # the highest both sides speak
        assert info["status"] == {
            "bridge": "no STATUS (spec < 1.1.0)",
            "portmap": "no STATUS (spec < 1.1.0)",
        }
        ctr = nyx_container_ns()
        d.setup("spec-c1", ctr.path)
        d.check("spec-c1")
        d.teardown("spec-c1", ctr.path)
        d.setup("spec-c2", ctr.path)  # left for GC, as after a crash
        report = d.gc([])
        assert report.removed == ["spec-c2"] and report.gc_plugins == []
    finally:
        d.close()
    calls = _calls(tmp_path)
    asked = {(c["plugin"], c["cmd"]) for c in calls}
    assert {("bridge", "ADD"), ("bridge", "CHECK"), ("bridge", "DEL"), ("host-local", "ADD"),
            ("portmap", "ADD"), ("portmap", "DEL")} <= asked  # fmt: skip
    assert {c["cmd"] for c in calls} <= {"VERSION", "ADD", "CHECK", "DEL"}, asked
    spoken = {c["cniVersion"] for c in calls if c["cmd"] != "VERSION" and c["plugin"] != "loopback"}
    assert spoken == {"1.0.0"}


def test_the_real_plugins_refuse_gc_and_status(tmp_path: Path) -> None:
    """Why: a 1.0 plugin does not know these operations and fails them."""
    conf = json.dumps({"cniVersion": "1.0.0", "name": "x", "type": "bridge"})
    for cmd in ("GC", "STATUS"):
        env = {"CNI_COMMAND": cmd, "CNI_PATH": str(DEBIAN_CNI), "PATH": "/usr/bin:/bin"}
        r = subprocess.run(
            [str(DEBIAN_CNI / "bridge")], input=conf, capture_output=True, text=True, env=env
        )
        assert r.returncode != 0, (cmd, r.stdout)
