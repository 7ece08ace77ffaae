"""Fixtures of the CNI driver tests: settings with private CNI dirs and fake plugins.

(``pytest_plugins = ["nyx_core.testing"]`` is declared once, in the root conftest.)
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from nyx_core import PluginSettings
from nyx_plugins_cni import CniSettings

DEBIAN_CNI = Path("/usr/lib/cni")

FAKE = """#!{python} -S
import json, os, signal, sys, time
MODE = {mode!r}
FAIL_ON = {fail_on!r}
VERSIONS = {versions!r}
IFACE = {iface!r}
ADDRESS = {address!r}
LOG = {log!r}
NAME = {name!r}
cmd = os.environ.get("CNI_COMMAND", "")
raw = sys.stdin.read()
conf = json.loads(raw) if raw.strip() else {{}}
env = {{k: v for k, v in os.environ.items() if k.startswith("CNI_")}}
with open(LOG, "a") as fh:
    fh.write(json.dumps({{"plugin": NAME, "cmd": cmd, "env": env, "conf": conf}}) + "\\n")
ver = conf.get("cniVersion", "1.0.0")
if cmd == "VERSION":
    print(json.dumps({{"cniVersion": ver, "supportedVersions": VERSIONS}}))
    sys.exit(0)
if cmd in FAIL_ON:
    if MODE == "error":
        print(json.dumps({{"cniVersion": ver, "code": 7, "msg": "Invalid Configuration",
                          "details": "fake detail from " + NAME}}))
        sys.exit(1)
    if MODE == "garbage":
        print("this is not json {{")
        sys.exit(0)
    if MODE == "hang":
        time.sleep(3600)
    if MODE == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    if MODE == "exit":
        sys.stderr.write("boom on stderr\\n")
        sys.exit(2)
    if MODE == "unavailable":
        print(json.dumps({{"cniVersion": ver, "code": 50, "msg": "plugin not available"}}))
        sys.exit(1)
if cmd == "ADD":
    prev = conf.get("prevResult")
    if IFACE:
        result = {{
            "cniVersion": ver,
            "interfaces": [
                {{"name": "veth-" + NAME, "mac": "02:00:00:00:00:01"}},
                {{"name": env["CNI_IFNAME"], "mac": "02:00:00:00:00:02",
                  "sandbox": env["CNI_NETNS"]}},
            ],
            "ips": [{{"address": ADDRESS, "gateway": "10.231.0.1", "interface": 1}}],
            "routes": [{{"dst": "0.0.0.0/0"}}],
            "dns": {{"nameservers": ["10.231.0.1"], "search": ["nyxd.local"]}},
        }}
    elif prev is not None:
        result = prev
    else:
        result = {{"cniVersion": ver}}
    print(json.dumps(result))
"""


class FakeBin:
    """A bin dir of fake CNI plugins that log every call to ``log``."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "bin"
        self.dir.mkdir()
        self.log = root / "calls.jsonl"
        self.log.touch()

    def make(
        self,
        name: str,
        mode: str = "ok",
        fail_on: Sequence[str] = ("ADD",),
        versions: Sequence[str] = ("0.3.0", "0.3.1", "0.4.0", "1.0.0"),
        iface: bool = False,
        address: str = "10.231.0.5/24",
    ) -> Path:
        path = self.dir / name
        path.write_text(
            FAKE.format(
                python=sys.executable,
                mode=mode,
                fail_on=list(fail_on),
                versions=list(versions),
                iface=iface,
                address=address,
                log=str(self.log),
                name=name,
            )
        )
        path.chmod(0o755)
        return path

    def link_debian(self) -> None:
        """Symlink the distro's plugins (bridge, host-local, portmap...) in here too."""
        for exe in DEBIAN_CNI.iterdir():
            target = self.dir / exe.name
            if not target.exists():
                target.symlink_to(exe)

    def calls(self, cmd: str | None = None) -> list[dict[str, Any]]:
        out = [json.loads(line) for line in self.log.read_text().splitlines() if line]
        return [c for c in out if cmd is None or c["cmd"] == cmd]

    def sequence(self, *cmds: str) -> list[tuple[str, str]]:
        """(plugin, command) of every call, VERSION excluded (or only ``cmds``)."""
        return [
            (c["plugin"], c["cmd"])
            for c in self.calls()
            if (c["cmd"] in cmds if cmds else c["cmd"] != "VERSION")
        ]

    def clear(self) -> None:
        self.log.write_text("")


@pytest.fixture
def fake_bin(tmp_path: Path) -> FakeBin:
    return FakeBin(tmp_path)


@pytest.fixture
def nyx_plugin_settings(tmp_path: Path) -> list[PluginSettings]:
    """The CNI driver's settings with its dirs moved off the real host's /etc and /opt
    (the kit's ``nyx_settings`` carries them)."""
    return [CniSettings(bin_dir=DEBIAN_CNI, conf_dir=tmp_path / "net.d")]
