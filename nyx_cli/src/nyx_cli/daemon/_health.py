"""Healthchecks: nyxd runs a container's health probe inside it and keeps its status.

The probe is the spec's ``healthcheck`` over the image's ``Healthcheck`` (docker's merge: a
field the spec sets wins, then the image's, then docker's defaults). A thread per running
container waits ``interval`` (``start_interval`` while still starting within the start
period), runs the probe with the runtime's ``exec`` (runc exec: the container's namespaces,
cgroup, environment, user, working directory, capabilities and seccomp filter) and a
``timeout``, and records the result the way docker does:

- exit 0: healthy, the failing streak back to 0;
- anything else (a timeout, a probe that cannot start): a failure; while the container is
  still ``starting`` and within ``start_period`` it does not count, otherwise the streak
  grows and reaching ``retries`` makes it ``unhealthy``.

The last 5 results (output cut at 4 KiB) are kept on the container record.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from loguru import logger
from pydantic import BaseModel, Field, ValidationError

from ._models import Healthcheck

if TYPE_CHECKING:
    from ._live import Live
    from ._supervisor import Supervisor

__all__ = [
    "HealthConfig",
    "HealthResult",
    "HealthService",
    "HealthState",
    "record_result",
    "resolve_healthcheck",
]

DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3
MAX_LOG = 5  # docker's maxLogEntries
MAX_OUTPUT = 4096  # docker's maxOutputLen
HealthStatus = Literal["starting", "healthy", "unhealthy"]


class HealthResult(BaseModel):
    """One probe: when it ran, its exit code (-1: timed out or could not run), its output."""

    start: str
    end: str
    exit_code: int
    output: str = ""


class HealthState(BaseModel):
    """A container's health as ``nyx inspect`` shows it (docker's ``State.Health``)."""

    status: HealthStatus = "starting"
    failing_streak: int = 0
    log: list[HealthResult] = Field(default_factory=list)


@dataclass(frozen=True)
class HealthConfig:
    """The probe nyxd runs: argv in the container, and its timing (seconds)."""

    argv: tuple[str, ...]
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    start_period: float = 0.0
    start_interval: float = DEFAULT_INTERVAL


def _image_healthcheck(config: Mapping[str, Any]) -> Healthcheck | None:
    """The image config's ``Healthcheck`` (durations in ns), or ``None`` when absent or bad
    (image content is not trusted: a malformed one is ignored with a warning)."""
    raw = config.get("Healthcheck")
    if not isinstance(raw, Mapping):
        return None

    def seconds(key: str) -> float | None:
        value = raw.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value / 1e9
        return None

    retries = raw.get("Retries")
    try:
        return Healthcheck(
            test=raw.get("Test") or None,
            interval=seconds("Interval"),
            timeout=seconds("Timeout"),
            start_period=seconds("StartPeriod"),
            start_interval=seconds("StartInterval"),
            retries=retries if isinstance(retries, int) and retries > 0 else None,
        )
    except (ValidationError, TypeError) as exc:
        logger.bind(healthcheck=repr(raw)[:200], error=str(exc)).warning(
            "the image's Healthcheck is malformed; ignored"
        )
        return None


def resolve_healthcheck(
    image_config: Mapping[str, Any], spec: Healthcheck | None
) -> HealthConfig | None:
    """The probe to run for a container, or ``None`` (no test, or ``["NONE"]``).

    Each field the spec sets wins over the image's (``test`` too: a spec with only
    ``interval`` keeps the image's test), then docker's defaults. ``CMD-SHELL`` runs with
    the image's ``Shell`` (default ``/bin/sh -c``).
    """
    image = _image_healthcheck(image_config) or Healthcheck()
    spec = spec or Healthcheck()

    def pick(name: str) -> Any:
        mine = getattr(spec, name)
        return mine if mine is not None else getattr(image, name)

    test = pick("test")
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD":
        argv = tuple(test[1:])
    else:
        shell = image_config.get("Shell")
        if not (isinstance(shell, list) and shell and all(isinstance(s, str) for s in shell)):
            shell = ["/bin/sh", "-c"]
        argv = (*shell, test[1])
    interval = pick("interval") or DEFAULT_INTERVAL
    return HealthConfig(
        argv=argv,
        interval=interval,
        timeout=pick("timeout") or DEFAULT_TIMEOUT,
        retries=pick("retries") or DEFAULT_RETRIES,
        start_period=pick("start_period") or 0.0,
        start_interval=pick("start_interval") or interval,
    )


def record_result(
    state: HealthState, cfg: HealthConfig, result: HealthResult, since_start: float
) -> HealthState:
    """``state`` after one probe that began ``since_start`` seconds after the container's
    start (docker's ``handleProbeResult``)."""
    out = state.model_copy(deep=True)
    out.log = [*out.log, result][-MAX_LOG:]
    if result.exit_code == 0:
        out.failing_streak = 0
        out.status = "healthy"
        return out
    if out.status == "starting" and since_start < cfg.start_period:
        return out  # the start period's failures do not count
    out.failing_streak += 1
    if out.failing_streak >= cfg.retries:
        out.status = "unhealthy"
    return out


class HealthService:
    """Starts and stops the probe thread of each running container that has a healthcheck."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup

    def start(self, live: Live, image: Any, *, keep: bool = False) -> None:
        """Begin probing ``live`` (just started, or re-adopted with ``keep``: its recorded
        status is kept). Without a healthcheck its health is ``None``."""
        self.stop(live)
        rec = live.rec
        cfg = resolve_healthcheck(getattr(image, "config", None) or {}, rec.spec.healthcheck)
        live.health = cfg
        if cfg is None:
            rec.health = None
            return
        if not keep or rec.health is None:
            rec.health = HealthState()
        stop = threading.Event()
        live.health_stop = stop
        threading.Thread(
            target=self._loop, args=(live, cfg, stop), name=f"health-{rec.id[:12]}", daemon=True
        ).start()

    def stop(self, live: Live) -> None:
        """Stop probing (the container ended, or is stopping)."""
        live.health_stop.set()

    def _loop(self, live: Live, cfg: HealthConfig, stop: threading.Event) -> None:
        while True:
            starting = live.rec.health is not None and live.rec.health.status == "starting"
            early = self.sup.clock() - live.started_at < cfg.start_period
            if stop.wait(cfg.start_interval if starting and early else cfg.interval):
                return
            self.probe(live, cfg, stop)

    def probe(self, live: Live, cfg: HealthConfig, stop: threading.Event | None = None) -> None:
        """Run the probe once and record its result (nothing when the container ended)."""
        from ._state import now

        rec = live.rec
        began, t0 = now(), self.sup.clock()
        try:
            code, output = self.sup.host.runtime.exec(rec.id, list(cfg.argv), cfg.timeout)
        except Exception as exc:
            code, output = -1, f"health probe could not run: {exc}"
        if code is None:
            code, output = -1, f"Health check exceeded timeout ({cfg.timeout:g}s)"
        result = HealthResult(start=began, end=now(), exit_code=code, output=output[:MAX_OUTPUT])
        with live.lock:
            if (stop is not None and stop.is_set()) or rec.state != "running" or not rec.health:
                return
            before = rec.health.status
            rec.health = record_result(rec.health, cfg, result, t0 - live.started_at)
            self.sup._persist(live)
            if rec.health.status != before:
                logger.bind(container=rec.id, health=rec.health.status, exit_code=code).info(
                    "health status changed"
                )
