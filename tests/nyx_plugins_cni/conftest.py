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

#: The spec the fakes follow: containernetworking/cni SPEC.md, version 1.1.0 (main after
#: commit 6a68851 "SPEC: use correct GC field name": ``cni.dev/valid-attachments``, the key
#: libcni sends; the ``spec-v1.1.0`` tag still says ``cni.dev/attachments``). "S2 GC" below is
#: Section 2, "Execution Protocol", operation ``GC``; "S5 Error" is Section 5, "Result
#: Types", "Error"; and so on. The distro's real plugins speak up to 1.0.0 and no newer build
#: can be installed here, so GC and STATUS are tested against these fakes, and the real ones
#: are shown never to receive them (integration/test_cni_spec_versions.py).
SPEC = "https://github.com/containernetworking/cni/blob/main/SPEC.md"

FAKE = """#!{python} -S
# A fake CNI plugin; each branch cites the SPEC.md section it follows (see SPEC in conftest).
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


def error(code, msg, details=""):
    # S5 Error: non-zero exit, the error structure on stdout; codes 0-99 are the spec's
    print(json.dumps({{"cniVersion": ver, "code": code, "msg": msg, "details": details}}))
    sys.exit(1)


if cmd == "VERSION":
    # S2 VERSION (input: cniVersion only) and S5 Version: cniVersion echoes the input
    print(json.dumps({{"cniVersion": ver, "supportedVersions": VERSIONS}}))
    sys.exit(0)
# S1 "Version considerations" / S5 Error code 1: a version the plugin does not speak
if ver not in VERSIONS:
    error(1, "Incompatible CNI version", NAME + " got " + ver + ", speaks " + ", ".join(VERSIONS))
# S2 Parameters: CNI_COMMAND is one of the operations of the spec version in use; GC and
# STATUS exist from 1.1.0 on (S2 GC, S2 STATUS). Anything else: S5 Error code 4.
known = ["ADD", "DEL", "CHECK"] + (["GC", "STATUS"] if ver == "1.1.0" else [])
if cmd not in known:
    error(4, "Invalid necessary environment variables", "CNI_COMMAND=" + cmd + " at " + ver)
attachment = ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME")
if cmd in ("GC", "STATUS"):
    # S3 "Garbage-collecting a network" (no Attachment Parameters) and S2 STATUS (input:
    # the plugin configuration; optional CNI_PATH): no container, no interface (set but
    # empty is none, as libcni's invoke.Args sends them)
    given = [k for k in attachment if env.get(k)]
    if given:
        error(4, "Invalid necessary environment variables", cmd + " with " + ", ".join(given))
    # S3 "Deriving request configuration": runtimeConfig and prevResult are for ADD, DEL
    # and CHECK only; capabilities must never be set
    extra = [k for k in ("runtimeConfig", "prevResult", "capabilities") if k in conf]
    if extra:
        error(7, "Invalid network config", cmd + " with " + ", ".join(extra))
if cmd == "GC":
    # S2 GC, input: cni.dev/valid-attachments, a list of containerID + ifname; required
    # environment CNI_COMMAND and CNI_PATH
    valid = conf.get("cni.dev/valid-attachments")
    if "CNI_PATH" not in env:
        error(4, "Invalid necessary environment variables", "GC without CNI_PATH")
    if not isinstance(valid, list) or not all(
        isinstance(a, dict) and isinstance(a.get("containerID"), str)
        and isinstance(a.get("ifname"), str) for a in valid
    ):
        error(7, "Invalid network config", "cni.dev/valid-attachments: " + repr(valid))
if cmd == "CHECK" and "prevResult" not in conf:
    # S2 CHECK: the configuration must include the prevResult of the preceding ADD
    error(7, "Invalid network config", "CHECK without prevResult")
if cmd in FAIL_ON:
    if MODE == "error":  # S5 Error, code 7
        error(7, "Invalid Configuration", "fake detail from " + NAME)
    if MODE == "garbage":  # not the spec: a broken plugin
        print("this is not json {{")
        sys.exit(0)
    if MODE == "hang":  # not the spec: a stuck plugin
        time.sleep(3600)
    if MODE == "crash":  # not the spec: a crashing plugin
        os.kill(os.getpid(), signal.SIGSEGV)
    if MODE == "exit":  # S2 Errors: non-zero exit, here without the error structure
        sys.stderr.write("boom on stderr\\n")
        sys.exit(2)
    if MODE == "unavailable":  # S2 STATUS: code 50, the plugin cannot service ADD
        error(50, "plugin not available")
if cmd == "ADD":
    # S5 ADD Success (an interface plugin), or, chained (S3 "Adding an attachment"), the
    # prevResult passed on; cniVersion is the one supplied on input
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
# DEL (S2 DEL), CHECK (S2 CHECK: "either nothing or an error"), GC (S2 GC: "no output on
# success") and STATUS (S2 STATUS: exit 0 when ready) print nothing
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
