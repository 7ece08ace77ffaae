"""Restart policies in nyxd (issue 14): the policy, docker's backoff, and the supervisor with
the fakes of test_supervisor. No sleeping: the supervisor's clock and its restart scheduler
are replaced, and a test fires a scheduled restart itself."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import test_supervisor as ts
from pydantic import ValidationError
from test_supervisor import Calls, make_sup, spec

from nyx_cli.daemon._models import ContainerSpec
from nyx_cli.daemon._restart import Backoff, RestartPolicy
from nyx_cli.daemon._supervisor import Supervisor
from nyx_cli.errors import ConflictError
from nyx_core import PortMapping

calls, parts = ts.calls, ts.parts


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Pending:
    """A restart the supervisor scheduled: ``fire()`` is the timer going off."""

    def __init__(self, delay: float, fn: Callable[[], None]) -> None:
        self.delay = delay
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def fire(self) -> None:
        self.fn()


class Scheduler(list[Pending]):
    def __call__(self, delay: float, fn: Callable[[], None]) -> Pending:
        self.append(Pending(delay, fn))
        return self[-1]


def controlled(s: Supervisor) -> tuple[Clock, Scheduler]:
    clock, later = Clock(), Scheduler()
    s.clock = clock
    s.later = later
    return clock, later


@pytest.fixture
def sup(tmp_path: Path, parts: dict[str, Any], calls: Calls) -> Supervisor:
    return make_sup(tmp_path, parts, calls)


def exit_and_settle(s: Supervisor, parts: dict[str, Any], cid: str, code: int) -> dict[str, Any]:
    """The container's process ends with ``code``; returns once nyxd handled the exit."""
    parts["runtime"].exit(cid, code)
    s.wait(cid, timeout=10)
    return s.get(cid)


# ------------------------------------------------------------------ the policy


@pytest.mark.parametrize(
    ("text", "name", "retries"),
    [
        ("no", "no", None),
        ("always", "always", None),
        ("unless-stopped", "unless-stopped", None),
        ("on-failure", "on-failure", None),
        ("on-failure:5", "on-failure", 5),
    ],
)
def test_policy_parse(text: str, name: str, retries: int | None) -> None:
    policy = RestartPolicy.parse(text)
    assert (policy.name, policy.max_retries) == (name, retries)
    assert str(policy) == text


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("sometimes", "restart policy 'sometimes' is not one of no, on-failure[:N], always"),
        ("on-failure:0", "'on-failure:0': on-failure:N needs a retry count N >= 1"),
        ("on-failure:x", "'on-failure:x': on-failure:N needs a retry count"),
        ("always:3", "'always:3': a retry count goes only with on-failure"),
        ("", "restart policy '' is not one of"),
    ],
)
def test_bad_policy_is_a_clear_error_naming_the_value(value: str, message: str) -> None:
    with pytest.raises(ValidationError, match="restart") as err:
        ContainerSpec.model_validate({"image": "x", "restart": value}, strict=True)
    assert message in str(err.value)


def test_restart_and_rm_are_refused_together() -> None:
    with pytest.raises(ValidationError, match="restart 'always' and rm"):
        ContainerSpec(image="x", restart="always", rm=True)
    assert ContainerSpec(image="x", rm=True).restart == "no"


def test_policy_decisions() -> None:
    always, unless = RestartPolicy.parse("always"), RestartPolicy.parse("unless-stopped")
    on_failure, no = RestartPolicy.parse("on-failure:2"), RestartPolicy.parse("no")
    assert always.after_exit(0, 99) and unless.after_exit(0, 99)
    assert on_failure.after_exit(1, 0) and on_failure.after_exit(None, 1)
    assert not on_failure.after_exit(0, 0)
    assert not on_failure.after_exit(1, 2)  # at most N restarts
    assert RestartPolicy.parse("on-failure").after_exit(1, 1000)
    assert not no.after_exit(1, 0)
    assert always.at_nyxd_start(stopped_by_hand=True)
    assert unless.at_nyxd_start(stopped_by_hand=False)
    assert not unless.at_nyxd_start(stopped_by_hand=True)
    assert not on_failure.at_nyxd_start(stopped_by_hand=False)
    assert not no.at_nyxd_start(stopped_by_hand=False)


def test_backoff_doubles_from_100ms_caps_at_a_minute_and_resets_after_10s() -> None:
    b = Backoff()
    got = [b.next(uptime=0.5) for _ in range(12)]
    assert got[:6] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2])
    assert got[-1] == 60.0 and max(got) == 60.0
    assert b.next(uptime=9.99) == 60.0
    assert b.next(uptime=10.0) == pytest.approx(0.1)
    assert b.next(uptime=0.0) == pytest.approx(0.2)


# ------------------------------------------------------------------ nyxd restarts


def test_always_restarts_with_the_backoff_and_every_step_again(
    sup: Supervisor, parts: dict[str, Any], calls: Calls
) -> None:
    clock, later = controlled(sup)
    c = sup.create(spec(name="web", restart="always", ports=[PortMapping.parse("8080:80")]))
    assert c["restart"] == "always" and c["restart_count"] == 0
    got = exit_and_settle(sup, parts, c["id"], 0)
    assert got["state"] == "restarting" and got["restart_count"] == 1 and got["exit_code"] == 0
    assert [p.delay for p in later] == [pytest.approx(0.1)]
    # everything was undone; the restart applies every step again
    undone = ["runc_delete", "unmount", "deregister", "teardown", "netns_delete"]
    assert calls.names()[-5:] == undone
    calls.clear()
    later[-1].fire()
    assert calls.names() == ["netns_create", "setup", "register", "mount", "bundle", "start"]
    got = sup.get("web")
    assert got["state"] == "running" and got["restart_count"] == 1 and got["exit_code"] is None
    # a quick crash again: twice the delay; after a run of 10 s: back to 100 ms
    exit_and_settle(sup, parts, c["id"], 2)
    later[-1].fire()
    clock.t += 10
    exit_and_settle(sup, parts, c["id"], 2)
    assert [p.delay for p in later] == pytest.approx([0.1, 0.2, 0.1])
    later[-1].fire()
    assert sup.get("web")["restart_count"] == 3
    # the count is persisted with the record
    rec = sup.store.load_all()[0][0]
    assert rec.restart_count == 3 and rec.spec.restart == "always"


def test_on_failure_restarts_non_zero_exits_at_most_n_times(
    sup: Supervisor, parts: dict[str, Any]
) -> None:
    _, later = controlled(sup)
    c = sup.create(spec(restart="on-failure:2"))
    for _ in range(2):
        assert exit_and_settle(sup, parts, c["id"], 3)["state"] == "restarting"
        later[-1].fire()
    got = exit_and_settle(sup, parts, c["id"], 3)
    assert got["state"] == "exited" and got["exit_code"] == 3 and got["restart_count"] == 2
    assert len(later) == 2
    ok = sup.create(spec(restart="on-failure"))
    assert exit_and_settle(sup, parts, ok["id"], 0)["state"] == "exited"
    assert len(later) == 2


def test_no_policy_never_restarts(sup: Supervisor, parts: dict[str, Any]) -> None:
    _, later = controlled(sup)
    c = sup.create(spec())
    assert exit_and_settle(sup, parts, c["id"], 1)["state"] == "exited"
    assert later == []


def test_a_stop_by_hand_is_never_followed_by_a_restart(
    sup: Supervisor, parts: dict[str, Any]
) -> None:
    _, later = controlled(sup)
    c = sup.create(spec(restart="always"))
    got = sup.stop(c["id"], timeout=1)
    assert got["state"] == "stopped" and got["restart_count"] == 0
    assert later == []
    assert sup.store.load_all()[0][0].stopped_by_hand


def test_stop_while_waiting_to_restart_cancels_the_restart(
    sup: Supervisor, parts: dict[str, Any], calls: Calls
) -> None:
    _, later = controlled(sup)
    c = sup.create(spec(restart="unless-stopped"))
    exit_and_settle(sup, parts, c["id"], 1)
    assert sup.list_containers()[0]["state"] == "restarting"  # listed without all=1
    assert sup.stop(c["id"])["state"] == "stopped"
    assert later[-1].cancelled
    calls.clear()
    later[-1].fire()  # a timer that went off anyway does nothing
    assert calls == [] and sup.get(c["id"])["state"] == "stopped"
    assert sup.wait(c["id"], timeout=1)["state"] == "stopped"


def test_a_restarting_container_keeps_its_ports_and_needs_force_to_remove(
    sup: Supervisor, parts: dict[str, Any]
) -> None:
    _, later = controlled(sup)
    c = sup.create(spec(name="a", restart="always", ports=[PortMapping.parse("8080:80")]))
    exit_and_settle(sup, parts, c["id"], 1)
    with pytest.raises(ConflictError, match="8080"):
        sup.create(spec(name="b", ports=[PortMapping.parse("8080:80")]))
    with pytest.raises(ConflictError, match="'a' is restarting; stop it first"):
        sup.remove("a")
    sup.remove("a", force=True)
    assert later[-1].cancelled
    later[-1].fire()
    assert sup.list_containers(all=True) == []


def test_a_restart_that_fails_gives_up_with_the_error(
    sup: Supervisor, parts: dict[str, Any]
) -> None:
    _, later = controlled(sup)
    c = sup.create(spec(restart="always"))
    exit_and_settle(sup, parts, c["id"], 1)
    parts["runtime"].fail_start = "exec failed: boom"
    later[-1].fire()
    got = sup.get(c["id"])
    assert got["state"] == "exited" and "restart failed" in got["error"] and "boom" in got["error"]
    assert sup.wait(c["id"], timeout=1)["state"] == "exited"


def test_logs_follow_goes_on_across_a_restart(sup: Supervisor, parts: dict[str, Any]) -> None:
    _, later = controlled(sup)
    runtime = parts["runtime"]
    start = runtime.start

    def appending_start(container_id: str, bundle: Path, log_path: Path) -> int:
        before = log_path.read_bytes() if log_path.exists() else b""
        pid = start(container_id, bundle, log_path)
        log_path.write_bytes(before + log_path.read_bytes())  # runc appends to the log
        return pid

    runtime.start = appending_start
    c = sup.create(spec(restart="on-failure:1"))
    exit_and_settle(sup, parts, c["id"], 1)
    follow = sup.logs(c["id"], follow=True, poll=0.01)
    assert next(follow).startswith(b"hello")
    later[-1].fire()  # starts again: its greeting once more
    runtime.exit(c["id"], 1)
    rest = b"".join(follow)  # ends only once it exited for good
    assert sup.get(c["id"])["state"] == "exited"
    assert rest.startswith(b"hello")


def test_nyxd_shutdown_restarts_nothing(sup: Supervisor, parts: dict[str, Any]) -> None:
    _, later = controlled(sup)
    up = sup.create(spec(restart="always"))
    waiting = sup.create(spec(restart="always"))
    exit_and_settle(sup, parts, waiting["id"], 1)
    sup.shutdown(grace=1)
    assert later[-1].cancelled and len(later) == 1
    later[-1].fire()
    assert sup.get(up["id"])["state"] == "stopped"
    assert sup.get(waiting["id"])["state"] == "stopped"
    assert not any(r.stopped_by_hand for r in sup.store.load_all()[0])


def _by_name(s: Supervisor) -> dict[str, tuple[str, int]]:
    return {c["name"]: (c["state"], c["restart_count"]) for c in s.list_containers(all=True)}


def test_after_a_nyxd_restart_always_and_unless_stopped_start_again(
    tmp_path: Path, parts: dict[str, Any], calls: Calls
) -> None:
    first = make_sup(tmp_path, parts, calls)
    controlled(first)
    for name, policy in [
        ("always-by-hand", "always"),
        ("unless-by-hand", "unless-stopped"),
        ("always", "always"),
        ("unless", "unless-stopped"),
        ("on-failure", "on-failure"),
        ("no", "no"),
    ]:
        first.create(spec(name=name, restart=policy))
    first.create(spec(name="never-started", restart="always"), start=False)
    first.stop("always-by-hand")
    first.stop("unless-by-hand")
    first.shutdown(grace=1)  # nyxd's own stop of the others is not by hand
    calls.clear()
    second = make_sup(tmp_path, parts, calls)
    _, later = controlled(second)
    second.reconcile()
    assert _by_name(second) == {
        "always-by-hand": ("running", 0),  # docker: always comes back with the daemon
        "unless-by-hand": ("stopped", 0),
        "always": ("running", 0),
        "unless": ("running", 0),
        "on-failure": ("stopped", 0),
        "no": ("stopped", 0),
        "never-started": ("created", 0),
    }
    assert calls.names().count("start") == 3 and later == []
    # the one started again no longer counts as stopped by hand
    rec = next(r for r in second.store.load_all()[0] if r.name == "always-by-hand")
    assert not rec.stopped_by_hand and rec.state == "running"


def test_after_a_crash_of_nyxd_leftovers_are_undone_then_started_again(
    tmp_path: Path, parts: dict[str, Any], calls: Calls
) -> None:
    """nyxd killed (or the host rebooted): the recorded "running" containers cannot be
    adopted (their netns mounts are gone), are stopped and undone, and those whose policy
    says so start again, with every step applied afresh."""
    first = make_sup(tmp_path, parts, calls)
    controlled(first)
    first.create(spec(name="a", restart="always"))
    u = first.create(spec(name="u", restart="unless-stopped"))
    first.create(spec(name="n"))
    exit_and_settle(first, parts, u["id"], 1)  # "u" was waiting to restart at the crash
    calls.clear()
    # after a reboot: runc no longer knows the containers (and the first nyxd is gone)
    second = make_sup(tmp_path, {**parts, "runtime": ts.FakeRuntime(calls)}, calls)
    second.host.netns_alive = lambda path: False
    controlled(second)
    assert second.reconcile() == {"stopped": 2, "cleaned": 2, "adopted": 0}
    assert _by_name(second) == {"a": ("running", 0), "u": ("running", 1), "n": ("exited", 0)}
    names = calls.names()
    assert names.count("netns_delete") == 2 and names.count("start") == 2
    assert names.index("netns_delete") < names.index("start")
    assert names[-6:] == ["netns_create", "setup", "register", "mount", "bundle", "start"]


def test_an_adopted_container_restarts_by_its_policy(
    tmp_path: Path, parts: dict[str, Any], calls: Calls
) -> None:
    first = make_sup(tmp_path, parts, calls)
    controlled(first)  # the fakes' first nyxd still watches too: it must not restart it
    c = first.create(spec(restart="always"))
    second = make_sup(tmp_path, parts, calls)
    _, later = controlled(second)
    assert second.reconcile()["adopted"] == 1
    got = exit_and_settle(second, parts, c["id"], 1)
    assert got["state"] == "restarting" and len(later) == 1
    later[-1].fire()
    assert second.get(c["id"])["state"] == "running"
    parts["runtime"].ignore_term.discard(c["id"])
    second.shutdown(grace=1)
    assert [x for x in calls if x[0] == "kill"][-1][2] == signal.SIGTERM
