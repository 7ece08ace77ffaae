"""Healthchecks run by nyxd (issue 14): the merge of image and spec, docker's state machine,
and the supervisor's probes with the fakes of test_supervisor (a fake ``runtime.exec``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_supervisor as ts
from pydantic import ValidationError
from test_supervisor import Calls, make_sup, spec

from nyx_cli.daemon._health import (
    HealthConfig,
    HealthResult,
    HealthState,
    record_result,
    resolve_healthcheck,
)
from nyx_cli.daemon._models import ContainerSpec, Healthcheck
from nyx_cli.daemon._supervisor import Supervisor

calls, parts = ts.calls, ts.parts
S = 1_000_000_000  # ns: the image config's unit


# ------------------------------------------------------------------ the probe to run


def test_image_healthcheck_in_ns_with_docker_defaults() -> None:
    image = {"Healthcheck": {"Test": ["CMD-SHELL", "wget -q http://localhost/"], "Retries": 5}}
    cfg = resolve_healthcheck(image, None)
    assert cfg == HealthConfig(
        argv=("/bin/sh", "-c", "wget -q http://localhost/"),
        interval=30.0,
        timeout=30.0,
        retries=5,
        start_period=0.0,
        start_interval=30.0,
    )
    image["Healthcheck"].update(Interval=2 * S, Timeout=S // 2, StartPeriod=10 * S)
    image["Shell"] = ["/bin/ash", "-eo", "pipefail", "-c"]
    cfg = resolve_healthcheck(image, None)
    assert cfg is not None
    assert cfg.argv == ("/bin/ash", "-eo", "pipefail", "-c", "wget -q http://localhost/")
    assert (cfg.interval, cfg.timeout, cfg.start_period) == (2.0, 0.5, 10.0)


def test_the_spec_wins_field_by_field_and_none_turns_it_off() -> None:
    image = {"Healthcheck": {"Test": ["CMD", "true"], "Interval": 5 * S, "Retries": 7}}
    cfg = resolve_healthcheck(image, Healthcheck(interval=1, start_interval=0.5))
    assert cfg is not None
    assert (cfg.argv, cfg.interval, cfg.retries, cfg.start_interval) == (("true",), 1, 7, 0.5)
    other = resolve_healthcheck(image, Healthcheck(test=["CMD", "/bin/check", "--deep"]))
    assert other is not None and other.argv == ("/bin/check", "--deep") and other.interval == 5
    assert resolve_healthcheck(image, Healthcheck(test=["NONE"])) is None
    assert resolve_healthcheck({}, None) is None
    assert resolve_healthcheck({}, Healthcheck(interval=3)) is None  # no test anywhere
    assert resolve_healthcheck({"Healthcheck": {"Test": ["NONE"]}}, None) is None


@pytest.mark.parametrize(
    "bad",
    [
        {"Test": "true"},
        {"Test": ["SOMETIMES", "x"]},
        {"Test": ["CMD-SHELL", "a", "b"]},
        {"Test": ["CMD"]},
        {"Test": ["CMD", 3]},
        "nope",
    ],
)
def test_a_malformed_image_healthcheck_is_ignored(bad: Any) -> None:
    assert resolve_healthcheck({"Healthcheck": bad}, None) is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"test": []}, "healthcheck test [] must start with CMD, CMD-SHELL or NONE"),
        ({"test": ["curl", "x"]}, "healthcheck test ['curl', 'x'] must start with CMD"),
        ({"test": ["CMD"]}, "CMD needs a program to run"),
        ({"test": ["CMD-SHELL", "a", "b"]}, "CMD-SHELL takes one command line"),
        ({"test": ["NONE", "x"]}, '["NONE"] takes no arguments'),
        ({"interval": 0}, "healthcheck.interval"),
        ({"retries": 0}, "healthcheck.retries"),
        ({"timeout": "5s"}, "healthcheck.timeout"),
        ({"start_period": -1}, "healthcheck.start_period"),
        ({"every": 1}, "healthcheck.every"),
    ],
)
def test_bad_healthcheck_requests_name_the_field_and_value(
    body: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError) as err:
        ContainerSpec.model_validate({"image": "x", "healthcheck": body}, strict=True)
    assert message in str(err.value)


# ------------------------------------------------------------------ the state machine

CFG = HealthConfig(argv=("true",), interval=1, timeout=1, retries=3, start_period=10)


def result(code: int) -> HealthResult:
    return HealthResult(start="t0", end="t1", exit_code=code, output=f"exit {code}")


def run(state: HealthState, codes: list[int], since_start: float) -> HealthState:
    for code in codes:
        state = record_result(state, CFG, result(code), since_start)
    return state


def test_failures_in_the_start_period_do_not_count_while_starting() -> None:
    state = run(HealthState(), [1, 1, 1, 1], since_start=5)
    assert (state.status, state.failing_streak) == ("starting", 0)
    assert len(state.log) == 4
    state = run(state, [1, 1], since_start=10)
    assert (state.status, state.failing_streak) == ("starting", 2)
    state = run(state, [1], since_start=11)
    assert (state.status, state.failing_streak) == ("unhealthy", 3)


def test_starting_to_healthy_then_unhealthy_after_retries_and_back() -> None:
    state = run(HealthState(), [0], since_start=1)
    assert (state.status, state.failing_streak) == ("healthy", 0)
    state = run(state, [1, 2], since_start=2)  # the start period no longer matters
    assert (state.status, state.failing_streak) == ("healthy", 2)
    state = run(state, [-1], since_start=3)
    assert (state.status, state.failing_streak) == ("unhealthy", 3)
    state = run(state, [0], since_start=4)
    assert (state.status, state.failing_streak) == ("healthy", 0)
    state = run(state, [1] * 10, since_start=100)
    assert state.status == "unhealthy" and len(state.log) == 5  # docker keeps the last 5


# ------------------------------------------------------------------ probes in the supervisor


class Exec:
    """``runtime.exec``: answers from a list of exit codes (``None``: timed out)."""

    def __init__(self, codes: list[int | None]) -> None:
        self.codes = codes
        self.calls: list[tuple[str, list[str], float]] = []

    def __call__(self, cid: str, args: list[str], timeout: float) -> tuple[int | None, str]:
        self.calls.append((cid, list(args), timeout))
        code = self.codes.pop(0)
        return code, f"probe said {code}\n" + "x" * 5000


@pytest.fixture
def sup(tmp_path: Path, parts: dict[str, Any], calls: Calls) -> Iterator[Supervisor]:
    s = make_sup(tmp_path, parts, calls)
    yield s
    s.shutdown(grace=1)


HC = Healthcheck(test=["CMD-SHELL", "test -e /ready"], interval=60, timeout=2, retries=2)


def test_probes_run_in_the_container_and_set_the_health(
    sup: Supervisor, parts: dict[str, Any]
) -> None:
    parts["runtime"].exec = probe = Exec([1, 0, 1, None])
    c = sup.create(spec(name="db", healthcheck=HC))
    assert c["health"] == {"status": "starting", "failing_streak": 0, "log": []}
    live = sup._find("db")
    assert live.health is not None
    sup.health.probe(live, live.health)
    assert sup.get("db")["health"]["failing_streak"] == 1
    sup.health.probe(live, live.health)
    got = sup.get("db")["health"]
    assert got["status"] == "healthy" and got["failing_streak"] == 0
    assert probe.calls[0] == (c["id"], ["/bin/sh", "-c", "test -e /ready"], 2)
    assert got["log"][-1]["exit_code"] == 0 and len(got["log"][-1]["output"]) == 4096
    sup.health.probe(live, live.health)
    sup.health.probe(live, live.health)  # timed out: a failure with docker's message
    got = sup.get("db")["health"]
    assert got["status"] == "unhealthy"
    assert got["log"][-1]["exit_code"] == -1
    assert got["log"][-1]["output"] == "Health check exceeded timeout (2s)"
    # persisted with the record
    assert sup.store.load_all()[0][0].health.status == "unhealthy"  # type: ignore[union-attr]


def test_a_probe_that_cannot_run_is_a_failure(sup: Supervisor, parts: dict[str, Any]) -> None:
    def broken(cid: str, args: list[str], timeout: float) -> tuple[int | None, str]:
        raise OSError("runc exploded")

    parts["runtime"].exec = broken
    sup.create(spec(name="db", healthcheck=HC.model_copy(update={"retries": 1})))
    live = sup._find("db")
    assert live.health is not None
    sup.health.probe(live, live.health)
    got = sup.get("db")["health"]
    assert got["status"] == "unhealthy" and "runc exploded" in got["log"][0]["output"]


def test_the_image_healthcheck_is_used_and_no_healthcheck_means_no_health(
    sup: Supervisor, parts: dict[str, Any]
) -> None:
    img = parts["images"].images["busybox:nyx"]
    assert sup.create(spec(name="plain"))["health"] is None
    img.config = {"Cmd": ["sh"], "Healthcheck": {"Test": ["CMD", "true"], "Interval": 3 * S}}
    c = sup.create(spec(name="checked"))
    assert c["health"]["status"] == "starting"
    live = sup._find("checked")
    assert live.health is not None and live.health.argv == ("true",)
    assert live.health.interval == 3
    off = sup.create(spec(name="off", healthcheck=Healthcheck(test=["NONE"])))
    assert off["health"] is None


def test_a_result_that_arrives_after_the_exit_is_dropped(
    sup: Supervisor, parts: dict[str, Any]
) -> None:
    parts["runtime"].exec = Exec([0])
    c = sup.create(spec(name="db", healthcheck=HC))
    live = sup._find("db")
    cfg = live.health
    assert cfg is not None
    sup.stop("db", timeout=1)
    sup.health.probe(live, cfg)
    assert sup.get(c["id"])["health"]["status"] == "starting"


def test_the_probe_thread_runs_on_its_interval_and_a_restart_starts_over(
    sup: Supervisor, parts: dict[str, Any]
) -> None:
    healthy = threading.Event()
    probe = Exec([0] * 1000)

    def exec_(cid: str, args: list[str], timeout: float) -> tuple[int | None, str]:
        got = probe(cid, args, timeout)
        if len(probe.calls) >= 2:
            healthy.set()
        return got

    parts["runtime"].exec = exec_
    later: list[Any] = []
    sup.later = lambda delay, fn: later.append(fn)
    c = sup.create(spec(name="db", restart="always", healthcheck=HC.model_copy(
        update={"interval": 0.01}
    )))  # fmt: skip
    assert healthy.wait(10)
    assert sup.get("db")["health"]["status"] == "healthy"
    parts["runtime"].exit(c["id"], 1)
    sup.wait("db", timeout=10)
    n = len(probe.calls)
    assert sup.get("db")["state"] == "restarting"
    later[-1]()
    assert sup.get("db")["health"] == {"status": "starting", "failing_streak": 0, "log": []}
    assert sup._find("db").health_stop is not None
    assert n >= 2


def test_readoption_keeps_the_recorded_health_and_probes_again(
    tmp_path: Path, parts: dict[str, Any], calls: Calls
) -> None:
    parts["runtime"].exec = Exec([0, 0])
    first = make_sup(tmp_path, parts, calls)
    first.create(spec(name="db", healthcheck=HC))
    live = first._find("db")
    assert live.health is not None
    first.health.probe(live, live.health)
    first.health.stop(live)
    second = make_sup(tmp_path, parts, calls)
    assert second.reconcile()["adopted"] == 1
    assert second.get("db")["health"]["status"] == "healthy"
    adopted = second._find("db")
    assert adopted.health == live.health and not adopted.health_stop.is_set()
    second.health.stop(adopted)
