"""Test-only fault points: every point exists in the code, and nyxd refuses them outside tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nyx_cli._faults import POINTS, Faults, FaultsRefused, from_environ

SRC = Path(__file__).resolve().parents[3] / "nyx_cli" / "src" / "nyx_cli"
NYXD = [sys.executable, "-c", "from nyx_cli.daemon import main; main()"]
_CALL = re.compile(r"""(?:checkpoint|\.hit)\(\s*f?"([a-z]+:[a-z{}._]+)"\s*\)""")


def _named_in_code() -> set[str]:
    found: set[str] = set()
    for path in SRC.rglob("*.py"):
        for point in _CALL.findall(path.read_text()):
            if point in ("start:{step.name}", "undo:{step.name}"):  # _steps.py: one per step
                kind = point.split(":")[0]
                found |= {p for p in POINTS if p.startswith(kind + ":") and p != "start:done"}
            else:
                found.add(point)
    return found


def test_every_point_is_in_the_code_and_every_call_names_a_point() -> None:
    named = _named_in_code()
    assert named - POINTS == set(), "a checkpoint names an unknown point"
    assert POINTS - named == set(), "a point no code passes through"


def test_every_step_of_a_container_has_its_points() -> None:
    """A start point per step; an undo point per step that records that it began."""
    from nyx_cli.daemon._steps import STEPS, Step

    for step in STEPS:
        assert f"start:{step.name}" in POINTS, step.name
        records = step.flag is not None or type(step).begun is not Step.begun  # netns: a path
        assert (f"undo:{step.name}" in POINTS) == records, step.name


def test_nothing_armed_without_the_variable() -> None:
    assert from_environ({}) == frozenset()
    assert from_environ({"NYXD_TEST_MODE": "1"}) == frozenset()
    assert from_environ({"NYXD_TEST_FAULTS": " , "}) == frozenset()


def test_armed_only_with_the_test_switch() -> None:
    env = {"NYXD_TEST_FAULTS": "start:netns, store:blob", "NYXD_TEST_MODE": "1"}
    assert from_environ(env) == {"start:netns", "store:blob"}
    for switch in (None, "0", "yes", "true"):
        bad = {"NYXD_TEST_FAULTS": "start:netns"}
        if switch is not None:
            bad["NYXD_TEST_MODE"] = switch
        with pytest.raises(FaultsRefused, match="NYXD_TEST_MODE=1"):
            from_environ(bad)


def test_an_unknown_point_is_refused_naming_it() -> None:
    env = {"NYXD_TEST_FAULTS": "start:netns,start:nets", "NYXD_TEST_MODE": "1"}
    with pytest.raises(FaultsRefused, match="unknown fault point.*start:nets"):
        from_environ(env)


def test_an_unarmed_point_does_nothing() -> None:
    Faults({"start:netns"}).hit("start:network")  # still alive


def _nyxd(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NYXD_")}
    args = ["--state-dir", str(tmp_path / "s"), "--run-dir", str(tmp_path / "r")]
    args += ["--socket", str(tmp_path / "r" / "nyxd.sock"), "--net-driver", "bogus"]
    return subprocess.run(
        [*NYXD, *args], capture_output=True, text=True, timeout=60, env={**clean, **env}
    )


def test_nyxd_refuses_to_start_with_faults_armed_outside_tests(tmp_path: Path) -> None:
    """A production nyxd (no NYXD_TEST_MODE=1) with a fault point armed stops at once, one
    line, before loading anything (the bogus driver would be the next error)."""
    r = _nyxd({"NYXD_TEST_FAULTS": "start:netns"}, tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "nyxd: NYXD_TEST_FAULTS='start:netns' arms test-only fault points (nyxd kills itself "
        "there); refusing to start without NYXD_TEST_MODE=1, which only the test suite sets"
    ]
    assert not (tmp_path / "s").exists()
    # with the switch, it gets past the check (and stops at the next problem: the driver)
    r = _nyxd({"NYXD_TEST_FAULTS": "start:netns", "NYXD_TEST_MODE": "1"}, tmp_path)
    assert r.returncode == 2 and "'bogus'" in r.stderr, r.stderr
