"""The fake plugins hold the runtime to CNI SPEC.md (1.1.0): a request a section forbids is
answered with the error the spec names, so the driver tests over them can fail.

Each case breaks one rule the fake cites (tests/nyx_plugins_cni/conftest.py, ``FAKE``).
"""

from __future__ import annotations

from typing import Any

import pytest

from nyx_core import CniPluginError
from nyx_plugins_cni import PluginExec, PluginRequest

V10 = ["0.4.0", "1.0.0"]
V11 = ["0.4.0", "1.0.0", "1.1.0"]
GC_OK = {"cniVersion": "1.1.0", "name": "n", "type": "p", "cni.dev/valid-attachments": []}


def run(fake_bin: Any, versions: list[str], req: PluginRequest, conf: dict[str, Any]) -> Any:
    fake_bin.make("p", versions=versions, fail_on=[])
    return PluginExec(fake_bin.dir).run("p", req, conf)


def test_a_spec_conformant_gc_and_status_pass(fake_bin: Any) -> None:
    """S2 GC / S2 STATUS: no output on success."""
    assert run(fake_bin, V11, PluginRequest("GC"), GC_OK) is None
    status = {"cniVersion": "1.1.0", "name": "n", "type": "p"}
    assert run(fake_bin, V11, PluginRequest("STATUS"), status) is None


@pytest.mark.parametrize(
    ("versions", "req", "conf", "code", "says"),
    [
        # S5 Error code 1: a 1.0 plugin asked at 1.1.0
        (V10, PluginRequest("GC"), GC_OK, 1, "Incompatible CNI version"),
        # S2 Parameters: GC and STATUS are no operations of 1.0.0 (S5 Error code 4)
        (V11, PluginRequest("GC"), {**GC_OK, "cniVersion": "1.0.0"}, 4, "CNI_COMMAND=GC"),
        (V11, PluginRequest("STATUS"), {"cniVersion": "1.0.0"}, 4, "CNI_COMMAND=STATUS"),
        # S3 "Garbage-collecting a network": no attachment parameters
        (V11, PluginRequest("GC", "c1", "/x", "eth0"), GC_OK, 4, "GC with CNI_CONTAINERID"),
        # S2 GC input: cni.dev/valid-attachments, containerID + ifname objects
        (V11, PluginRequest("GC"), {**GC_OK, "cni.dev/valid-attachments": None}, 7, "valid"),
        (
            V11,
            PluginRequest("GC"),
            {**GC_OK, "cni.dev/valid-attachments": [{"containerID": "c1"}]},
            7,
            "valid-attachments",
        ),
        # the spec-v1.1.0 tag's key alone is not what libcni and the fixed SPEC.md send
        (
            V11,
            PluginRequest("GC"),
            {"cniVersion": "1.1.0", "cni.dev/attachments": []},
            7,
            "valid-attachments",
        ),
        # S3 "Deriving request configuration": no runtimeConfig/prevResult for GC
        (V11, PluginRequest("GC"), {**GC_OK, "runtimeConfig": {}}, 7, "runtimeConfig"),
        # S2 CHECK: prevResult is required
        (V11, PluginRequest("CHECK", "c1", "/x", "eth0"), {"cniVersion": "1.0.0"}, 7, "prev"),
    ],
    ids=[
        "gc-to-1.0-plugin",
        "gc-at-1.0",
        "status-at-1.0",
        "gc-with-container",
        "gc-without-attachments",
        "gc-attachment-without-ifname",
        "gc-with-the-tag-key",
        "gc-with-runtime-config",
        "check-without-prev-result",
    ],
)
def test_a_request_the_spec_forbids_is_refused(
    fake_bin: Any,
    versions: list[str],
    req: PluginRequest,
    conf: dict[str, Any],
    code: int,
    says: str,
) -> None:
    with pytest.raises(CniPluginError) as info:
        run(fake_bin, versions, req, conf)
    assert info.value.code == code
    assert says in str(info.value)
