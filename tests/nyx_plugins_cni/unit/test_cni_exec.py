"""Executing one plugin: environment, stdin, results, error objects, garbage, crash, hang."""

from __future__ import annotations

import time
from typing import Any

import pytest

from nyx_core import CniPluginError, NyxError
from nyx_plugins_cni import PluginExec, PluginRequest

REQ = PluginRequest("ADD", "ctr1", "/run/netns/x", "eth0", "K=V")
CONF = {"cniVersion": "1.0.0", "name": "nyx", "type": "p"}


def test_env_and_stdin_follow_the_spec(fake_bin: Any) -> None:
    fake_bin.make("p", iface=True)
    out = PluginExec(fake_bin.dir).run("p", REQ, CONF)
    assert out is not None and out["ips"][0]["address"] == "10.231.0.5/24"
    (call,) = fake_bin.calls("ADD")
    assert call["env"] == {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "ctr1",
        "CNI_NETNS": "/run/netns/x",
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "K=V",
        "CNI_PATH": str(fake_bin.dir),
    }
    assert call["conf"] == CONF


def test_version_lists_supported_versions(fake_bin: Any) -> None:
    fake_bin.make("p", versions=["0.4.0", "1.1.0"])
    assert PluginExec(fake_bin.dir).version("p", "1.0.0") == ["0.4.0", "1.1.0"]


def test_error_object_becomes_cni_plugin_error(fake_bin: Any) -> None:
    fake_bin.make("mybad", mode="error")
    with pytest.raises(CniPluginError) as info:
        PluginExec(fake_bin.dir).run("mybad", REQ, CONF)
    err = info.value
    assert isinstance(err, NyxError)
    assert err.plugin == "mybad" and err.code == 7
    assert err.msg == "ADD: Invalid Configuration"
    assert err.details == "fake detail from mybad"
    assert "CNI plugin 'mybad' failed (code 7)" in str(err)


def test_garbage_output_is_a_clear_error(fake_bin: Any) -> None:
    fake_bin.make("noisy", mode="garbage")
    with pytest.raises(CniPluginError, match=r"'noisy' failed: ADD: printed garbage instead"):
        PluginExec(fake_bin.dir).run("noisy", REQ, CONF)


def test_crash_is_a_clear_error(fake_bin: Any) -> None:
    fake_bin.make("crashy", mode="crash")
    with pytest.raises(
        CniPluginError, match=r"'crashy' failed: ADD: crashed \(killed by SIGSEGV\)"
    ):
        PluginExec(fake_bin.dir).run("crashy", REQ, CONF)


def test_exit_without_error_object_shows_stderr(fake_bin: Any) -> None:
    fake_bin.make("quitter", mode="exit")
    with pytest.raises(CniPluginError) as info:
        PluginExec(fake_bin.dir).run("quitter", REQ, CONF)
    assert "exited with status 2 without a CNI error object" in str(info.value)
    assert info.value.details == "boom on stderr"


def test_hang_is_killed_after_the_timeout(fake_bin: Any) -> None:
    fake_bin.make("sleepy", mode="hang")
    t0 = time.monotonic()
    with pytest.raises(CniPluginError, match=r"'sleepy' failed: ADD: no answer after 0.5s, killed"):
        PluginExec(fake_bin.dir, timeout=0.5).run("sleepy", REQ, CONF)
    assert time.monotonic() - t0 < 30  # killed, not waited for


def test_missing_plugin_names_the_path(fake_bin: Any) -> None:
    with pytest.raises(CniPluginError, match=r"'ghost' failed: no executable .*/bin/ghost"):
        PluginExec(fake_bin.dir).run("ghost", REQ, CONF)


def test_empty_output_is_none_for_del(fake_bin: Any) -> None:
    fake_bin.make("p")
    assert PluginExec(fake_bin.dir).run("p", PluginRequest("DEL", "c", "", "eth0"), CONF) is None


def test_runner_does_not_leak_callers_cni_variables(
    fake_bin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CNI_ARGS", "LEAKED=1")
    fake_bin.make("p")
    PluginExec(fake_bin.dir).run("p", PluginRequest("DEL", "c"), CONF)
    assert fake_bin.calls("DEL")[0]["env"]["CNI_ARGS"] == ""
