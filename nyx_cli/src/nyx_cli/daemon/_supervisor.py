"""The supervisor: runs containers with the network backend, DNS provider and runc.

It holds the :class:`~nyx_core.NetworkBackend` facade, the :class:`~nyx_core.DnsFacade`
(or ``None``) and the DNS policy; never a concrete driver. A start validates, then runs the
ordered steps of :mod:`nyx_cli.daemon._steps` (netns → network → DNS → /etc files →
rootfs + bundle → runc), each recorded in the container's state file before it acts; a
watcher thread waits for the exit. Stop: SIGTERM, grace period, SIGKILL, then every begun
step undone in reverse order. A container that ends by itself is started again when its
restart policy says so (:mod:`._restart`: docker's backoff, every step undone and applied
again); a stop by hand never is. Reconciliation after a restart (:mod:`._reconcile`), user
networks (:mod:`._networks`), healthchecks (:mod:`._health`) and the image store are
services it calls; what it serves besides containers (images, networks, volumes) is its base
class :class:`~nyx_cli.daemon._resources.Resources`.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from loguru import logger

from nyx_core import (
    DnsDecision,
    DnsFacade,
    NetworkBackend,
    PortMapping,
    PortRange,
    SetupResult,
    StackNetwork,
    clash_message,
    dns_policy,
    find_port_clash,
    installed_plugins,
    port_ranges,
    published_count,
)
from nyx_core.errors import ConfigError, NyxError

from ..errors import ConflictError, NotFoundError, RuntimeErrorNyx
from ._faults import FAULTS, Faults
from ._health import HealthService
from ._host import Host
from ._live import Live
from ._models import ContainerSpec, joined_container
from ._networks import NetworkRegistry
from ._reconcile import Reconciler
from ._resources import Resources, all_labels_match
from ._settings import DaemonSettings
from ._state import ContainerRecord, StateStore, now
from ._steps import Run, Steps
from ._volumes import VolumeStore

__all__ = ["Host", "Supervisor"]

_LABEL_RE = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$")
_TOMBSTONES = 256
_HOLDS_PORTS = ("running", "restarting")  # a restarting container gets its ports back


def _later(delay: float, fn: Callable[[], None]) -> threading.Timer:
    """Run ``fn`` in a thread after ``delay`` seconds; the timer's ``cancel()`` stops it."""
    timer = threading.Timer(delay, fn)
    timer.daemon = True
    timer.start()
    return timer


# ------------------------------------------------------------------------ containers


#: teardowns that run at once (:attr:`Supervisor._teardowns`)
_PARALLEL_TEARDOWNS = 8


class Supervisor(Resources):
    """Creates, starts, stops and removes containers; owns their networking lifecycle."""

    def __init__(
        self,
        settings: DaemonSettings,
        backend: NetworkBackend,
        dns: DnsFacade | None,
        host: Host,
        *,
        stop_grace: float = 10.0,
        readopt: bool = True,
        networks: NetworkRegistry | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.dns = dns
        self.host = host
        self.stop_grace = stop_grace
        self.readopt = readopt
        self.store = StateStore(settings.state_dir)
        self.run_dir = Path(settings.run_dir)
        (self.run_dir / "netns").mkdir(parents=True, exist_ok=True)
        # 0700: a container's rootfs (set-uid files of the image, its upper dir), bundle and
        # config live there; only the bind-mounted hosts/hostname/resolv.conf stay 0644
        (self.run_dir / "containers").mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.run_dir / "containers", 0o700)
        self.lock = threading.RLock()
        #: DNS providers' calls one at a time (the kit does not ask them to be thread-safe)
        self.dns_lock = threading.Lock()
        #: teardowns after exits at once (a shutdown or ``stop`` of many): a few at a time
        #: get through sooner than hundreds of threads taking turns at the GIL and locks
        self._teardowns = threading.BoundedSemaphore(_PARALLEL_TEARDOWNS)
        self.live: dict[str, Live] = {}
        self._tombstones: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.networks = networks or NetworkRegistry(settings, self.store, backend)
        self.faults = faults or FAULTS
        self.steps = Steps(self)
        self.reconciler = Reconciler(self)
        self.volumes = VolumeStore(Path(settings.state_dir) / "volumes")
        self.health = HealthService(self)
        #: seconds for uptimes and health start periods; tests inject a fake clock
        self.clock: Callable[[], float] = time.monotonic
        #: schedules a restart: ``later(delay, fn)`` returns something with ``cancel()``
        self.later: Callable[[float, Callable[[], None]], Any] = _later
        self._closing = False

    # ------------------------------------------------------------------ lookups

    def _find(self, ref: str) -> Live:
        with self.lock:
            if ref in self.live:
                return self.live[ref]
            for live in self.live.values():
                if live.rec.name == ref:
                    return live
            matches = [v for k, v in self.live.items() if k.startswith(ref)] if ref else []
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ConfigError(f"container id prefix {ref!r} is ambiguous")
        raise NotFoundError(f"no such container: {ref}")

    def _persist(self, live: Live) -> None:
        if not live.removed:
            self.store.save(live.rec)

    def list_containers(
        self, all: bool = False, labels: dict[str, str | None] | None = None
    ) -> list[dict[str, Any]]:
        with self.lock:
            lives = list(self.live.values())
        out = []
        for live in sorted(lives, key=lambda lv: lv.rec.created):
            rec = live.rec
            if not all and rec.state not in _HOLDS_PORTS:
                continue
            if labels and not all_labels_match(rec.spec.labels, labels):
                continue
            out.append(rec.public())
        return out

    def get(self, ref: str) -> dict[str, Any]:
        return self._find(ref).rec.public()

    def info(self) -> dict[str, Any]:
        from .. import __version__

        with self.lock:
            running = sum(1 for v in self.live.values() if v.rec.state == "running")
            count = len(self.live)
        try:
            images = len(self.host.images.list())
        except Exception:
            images = 0
        return {
            "version": __version__,
            "driver": self.backend.name,
            "capabilities": self.backend.capabilities().model_dump(),
            "dns": self.settings.dns,
            "dns_provider": self.dns.name if self.dns else None,
            "plugins": [
                {
                    "group": p.group,
                    "name": p.name,
                    "distribution": p.distribution,
                    "version": p.version,
                }
                for p in installed_plugins()
            ],
            "containers": count,
            "running": running,
            "images": images,
            "subnet": str(self.settings.container_subnet),
            "gateway": str(self.settings.gateway_ip),
            "registry_auth_file": str(self.settings.registry_auth_file),
            "subnet6": None if (n6 := self.settings.container_subnet6) is None else str(n6),
            "gateway6": None if (g6 := self.settings.gateway6) is None else str(g6),
        }

    # ------------------------------------------------------------------ create / start

    def create(self, spec: ContainerSpec, start: bool = True) -> dict[str, Any]:
        """Validate ``spec``, record the container and (by default) start it."""
        if self._closing:
            raise ConflictError("nyxd is shutting down")
        image = self._image(spec.image)
        del image
        for att in spec.attachments():
            self.networks.gateway(att.name)
        self._check_static_addresses(spec)
        self._check_ipv6_addresses(spec)
        # conflicts with running containers are checked once, when it starts
        self._check_ports(spec.ports, against_running=not start)
        spec, anonymous = self._check_mounts(spec)
        cid = secrets.token_hex(32)
        name = spec.name or f"nyx-{cid[:8]}"
        hostname = spec.hostname or (
            spec.name if spec.name and _LABEL_RE.match(spec.name) else cid[:12]
        )
        network_of = None
        ref = joined_container(spec.network_mode)
        if ref is not None:  # its names and files are the other container's
            other = self._network_owner(ref)
            network_of, hostname = other.rec.id, other.rec.hostname
        elif spec.network_mode == "host" and not spec.hostname:
            hostname = os.uname().nodename  # docker's: the host's name in the host's network
        rec = ContainerRecord(
            id=cid,
            name=name,
            spec=spec,
            hostname=hostname,
            networks=[self.networks.canonical(a.name) for a in spec.attachments()],
            internal_networks=self._internal_networks(spec),
            network_of=network_of,
        )
        live = Live(rec)
        with self.lock:
            if any(v.rec.name == name for v in self.live.values()):
                raise ConflictError(f"container name {name!r} is already in use")
            if network_of is not None and network_of not in self.live:
                raise NotFoundError(f"network_mode {spec.network_mode!r}: no such container")
            self._claim_volumes(spec, cid, anonymous)
            self.live[cid] = live
            # the log first: a record is never without its log (a crash in between leaves a
            # directory without a record, which the next start cleans up)
            self.store.container_dir(cid).mkdir(mode=0o700, parents=True, exist_ok=True)
            self.store.log_path(cid).touch(mode=0o600)
            self.store.save(rec)
        self.faults.hit("create:recorded")
        logger.bind(container=cid, name=name, image=spec.image).info("container created")
        if not start:
            return rec.public()
        try:
            return self.start(cid)
        except BaseException:
            self._forget(live)
            raise

    def _check_static_addresses(self, spec: ContainerSpec) -> None:
        """An address or MAC asked for needs a driver that honours it (``static_addresses``):
        refused before anything is made, never silently ignored."""
        if self.backend.capabilities().static_addresses:
            return
        for i, att in enumerate(spec.attachments()):
            for f in ("ipv4_address", "ipv6_address", "mac_address"):
                value = getattr(att, f)
                if value is None:
                    continue
                where = f if not spec.networks else f"networks[{i}].{f}"
                raise ConfigError(
                    f"{where} {value!r}: nyxd's net driver {self.backend.name!r} does not honour "
                    "static addresses or MACs (no static_addresses capability); configure "
                    "them in the driver instead"
                )

    def _check_ipv6_addresses(self, spec: ContainerSpec, exclude: str | None = None) -> None:
        """A static IPv6 address (``--ip6``, ``ipv6_address``) must be one its network can
        give (:meth:`NetworkRegistry.check_ipv6_address`: 400) and not held by a running
        (or restarting) container (409), checked before anything is made; the driver
        still refuses what this cannot see (a race)."""
        wanted = [
            (f"networks[{i}].ipv6_address" if spec.networks else "ipv6_address", att)
            for i, att in enumerate(spec.attachments())
            if att.ipv6_address is not None
        ]
        for where, att in wanted:
            self.networks.check_ipv6_address(att.name, str(att.ipv6_address), where)
        if not wanted:
            return
        with self.lock:
            holders = [
                v.rec
                for v in self.live.values()
                if v.rec.state in _HOLDS_PORTS and v.rec.id != exclude and not v.removed
            ]
        for where, att in wanted:
            network = self.networks.canonical(att.name)
            for rec in holders:
                asked = {
                    (self.networks.canonical(a.name), a.ipv6_address)
                    for a in rec.spec.attachments()
                }
                if att.ipv6_address in rec.ips or (network, att.ipv6_address) in asked:
                    raise ConflictError(
                        f"{where} {att.ipv6_address} is already taken on network {network!r} "
                        f"by container {rec.name!r}"
                    )

    def _network_owner(self, ref: str) -> Live:
        """The container whose network namespace ``network_mode: container:<ref>`` joins
        (followed to the one that owns it, as docker does)."""
        try:
            other = self._find(ref)
        except NotFoundError as exc:
            raise NotFoundError(f"network_mode 'container:{ref}': no such container") from exc
        if other.rec.network_of is not None:
            with self.lock:
                owner = self.live.get(other.rec.network_of)
            if owner is None:
                raise NotFoundError(
                    f"network_mode 'container:{ref}': {other.rec.name!r} joined a container "
                    "that is gone"
                )
            other = owner
        if other.rec.spec.network_mode == "host":
            raise ConfigError(
                f"network_mode 'container:{ref}': {other.rec.name!r} uses the host's network; "
                "use network_mode 'host'"
            )
        return other

    def joiners(self, cid: str, states: Sequence[str] = ("created", *_HOLDS_PORTS)) -> list[Live]:
        """Containers that joined ``cid``'s network namespace (``network_mode: container:``)."""
        with self.lock:
            return [
                v
                for v in self.live.values()
                if v.rec.network_of == cid and v.rec.state in states and not v.removed
            ]

    def host_gateway(self, rec: ContainerRecord, results: Sequence[SetupResult] = ()) -> str:
        """``extra_hosts``' ``host-gateway``: the gateway of the container's first network
        (a host address the container reaches: as the driver reported it, else as nyxd
        recorded the network), nyxd's default gateway for a container without a network."""
        for result in results[:1]:
            if result.gateway is not None:
                return str(result.gateway)
        for att in rec.spec.attachments()[:1]:
            gateway = self.networks.gateway(att.name)
            if gateway is not None:
                return str(gateway.ip)
        return str(self.settings.gateway_ip)

    def _check_ports(
        self,
        ports: Sequence[PortMapping],
        exclude: str | None = None,
        *,
        against_running: bool = True,
    ) -> None:
        """Refuse too many ports, a port listed twice, or one a running container publishes.

        Intervals, not ports (:func:`nyx_core.find_port_clash`): O(m log m) for m mappings, and only
        the gathering of the running containers' mappings holds the supervisor's lock.
        """
        count = published_count(ports)
        limit = self.settings.max_published_ports
        shown = [str(p) for p in ports[:3]] + (["..."] if len(ports) > 3 else [])
        if count > limit:
            raise ConfigError(
                f"ports {shown}: {count} host ports to publish, more than "
                f"max_published_ports={limit} (NYXD_MAX_PUBLISHED_PORTS) allows per container"
            )
        new = port_ranges(ports)
        taken: list[PortRange] = []
        if against_running and new:
            # only mappings that overlap one of ours become intervals: the others cost a
            # comparison each, with a thousand containers running
            spans = [(r.protocol, r.first, r.last) for r in new]
            with self.lock:
                for v in self.live.values():
                    if v.rec.state not in _HOLDS_PORTS or v.rec.id == exclude:
                        continue
                    for m in v.rec.spec.ports:
                        first, last = m.host_port, m.host_port + m.range - 1
                        for proto, a, b in spans:
                            if proto == m.protocol and a <= last and first <= b:
                                taken += port_ranges([m], v.rec.name)
                                break
        clash = find_port_clash(new, taken)
        if clash is None:
            return
        if clash[1].owner is None:
            raise ConfigError(f"ports {shown}: {clash_message(*clash)}")
        raise ConflictError(clash_message(*clash))

    def start(self, ref: str) -> dict[str, Any]:
        live = self._find(ref)
        with live.lock:
            if live.rec.state == "running":
                return live.rec.public()
            if live.rec.state != "created":
                raise ConflictError(
                    f"container {live.rec.name!r} is {live.rec.state}; create a new one"
                )
            self._check_ports(live.rec.spec.ports, exclude=live.rec.id)
            self._check_ipv6_addresses(live.rec.spec, exclude=live.rec.id)
            with logger.contextualize(container=live.rec.id):
                self._start(live)
        return live.rec.public()

    def _internal_networks(self, spec: ContainerSpec) -> list[str]:
        """The one place "internal" is decided: the canonical names of ``spec``'s networks
        on which the container is internal (its spec says so, ``internal`` or
        ``networks[].internal``, or the network was created internal).

        Called once at create and kept in the record, so the driver (``SetupOptions.
        internal``: egress dropped) and the DNS provider (``internal_networks``: no
        forwarding) get the same answer, also after a nyxd restart.
        """
        return list(
            dict.fromkeys(
                self.networks.canonical(a.name)
                for a in spec.attachments()
                if a.internal or self.networks.is_internal(a.name)
            )
        )

    def _recorded_internal(self, rec: ContainerRecord) -> list[str]:
        """``rec.internal_networks``, decided now for a record of an older nyxd."""
        if rec.internal_networks is None:
            rec.internal_networks = self._internal_networks(rec.spec)
        return rec.internal_networks

    def _dns_decision(self, spec: ContainerSpec) -> DnsDecision:
        if spec.dns is False:
            return DnsDecision(use_provider=False, resolv_conf="none")
        if spec.network_mode is not None:  # no network of its own: the host's resolv.conf
            return DnsDecision(use_provider=False, resolv_conf="driver")
        if spec.dns is True:
            return DnsDecision(use_provider=self.dns is not None, resolv_conf="provider")
        stack = None
        if spec.stack_services is not None:
            stack = {
                svc: [
                    StackNetwork(n.name, n.internal or self.networks.is_internal(n.name))
                    for n in s.networks
                ]
                for svc, s in spec.stack_services.items()
            }
        decision = dns_policy(self.settings.dns, self.backend.capabilities(), stack)
        if decision.use_provider and self.dns is None:
            return DnsDecision(use_provider=False, resolv_conf="driver")
        return decision

    def _start(self, live: Live) -> None:
        rec = live.rec
        cid = rec.id
        image = self._image(rec.spec.image)
        netns = self.run_dir / "netns" / cid
        if rec.network_of is not None:
            netns = self._joined_netns(rec)
        cdir = self.run_dir / "containers" / cid
        cdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        run = Run(
            rec=rec,
            image=image,
            cdir=cdir,
            netns=netns,
            internal=self._recorded_internal(rec),
            decision=self._dns_decision(rec.spec),
        )
        self.steps.apply(run, lambda: self._persist(live))
        assert run.pid is not None
        rec.state = "running"
        rec.pid = run.pid
        rec.started = now()
        rec.finished = None
        rec.exit_code = None
        rec.error = None
        rec.stopped_by_hand = False
        live.started_at = self.clock()
        live.exited.clear()
        live.done.clear()
        self.health.start(live, image)
        self._persist(live)
        logger.bind(pid=run.pid, ips=rec.ips, ms=Steps.timings(run)).info("container started")
        self._watch_exit(live, run.pid)

    def _watch_exit(self, live: Live, pid: int) -> None:
        """:meth:`_watch` once ``pid`` has ended: from the host's one watcher of every
        container (``Host.watch_exit``), else a thread of its own waits for it."""
        cid = live.rec.id
        if self.host.watch_exit is not None:
            # the runtime's pidfd when it has one: taken before anything could reap the init
            take = getattr(self.host.runtime, "pidfd", None)
            fd = take(cid, pid) if callable(take) else None
            self.host.watch_exit(pid, f"exit-{cid[:12]}", lambda: self._watch(live, pid), fd)
            return
        threading.Thread(
            target=self._watch, args=(live, pid), name=f"watch-{cid[:12]}", daemon=True
        ).start()

    def _joined_netns(self, rec: ContainerRecord) -> Path:
        """The running network owner's netns (``network_mode: container:``)."""
        with self.lock:
            owner = self.live.get(rec.network_of or "")
        if owner is None or owner.removed:
            raise NotFoundError(
                f"network_mode {rec.spec.network_mode!r}: the container is gone; create a new one"
            )
        if owner.rec.state != "running" or not owner.rec.netns_path:
            raise ConflictError(
                f"network_mode {rec.spec.network_mode!r}: container {owner.rec.name!r} is "
                f"{owner.rec.state}; start it first"
            )
        return Path(owner.rec.netns_path)

    def dns_aliases(self, rec: ContainerRecord) -> list[str]:
        names: list[str] = []
        for att in rec.spec.attachments():
            names.extend(att.aliases)
        names.extend(rec.spec.aliases)
        if rec.spec.name and rec.name != rec.hostname and _LABEL_RE.match(rec.name):
            names.append(rec.name)
        return list(dict.fromkeys(n for n in names if n != rec.hostname))

    # ------------------------------------------------------------------ exit / stop / rm

    def _watch(self, live: Live, pid: int) -> None:
        rec = live.rec
        code: int | None
        try:
            code = self.host.runtime.wait(rec.id, pid, None)
        except Exception as exc:
            logger.bind(container=rec.id, error=str(exc)).warning("wait failed")
            code = None
        exited = time.perf_counter()
        undo_ms: dict[str, float] = {}
        live.exited.set()
        self.health.stop(live)
        with live.lock, logger.contextualize(container=rec.id):
            try:
                rec.exit_code = code
                rec.finished = now()
                rec.pid = None
                self.faults.hit("exit:teardown")
                with self._teardowns:
                    self._teardown(live, undo_ms)
                self.faults.hit("exit:recorded")
            except Exception as exc:
                logger.bind(error=repr(exc)).error("after-exit teardown failed")
            finally:
                # straight from running to restarting (never "exited" in between, which a
                # compose up waiting for a dependency would take for its end), before done
                if not self._plan_restart(live, code):
                    rec.state = "stopped" if live.stop_requested else "exited"
                try:
                    self._persist(live)
                except Exception as exc:
                    logger.bind(error=repr(exc)).error("container state not saved")
                self._stop_joiners(rec)  # before done: a wait for this exit sees them stopping
                live.done.set()
            total = round((time.perf_counter() - exited) * 1000, 1)
            logger.bind(exit_code=code, state=rec.state, teardown_ms=total, undo_ms=undo_ms).info(
                "container finished"
            )
        if rec.spec.rm and not self._closing:
            with contextlib.suppress(NyxError):
                self._remove(live)

    def _stop_joiners(self, rec: ContainerRecord) -> None:
        """The containers in ``rec``'s network namespace lost their network with it (also
        when ``rec`` restarts by its policy: its netns is made anew): they are stopped too,
        not by hand, with their own grace (in the background: each stop waits for its own
        teardown). One waiting to restart just stays stopped."""
        if self._closing:
            return
        for joiner in self.joiners(rec.id, _HOLDS_PORTS):
            logger.bind(container=joiner.rec.id, owner=rec.id).info(
                "stopping: the container whose network it joined has stopped"
            )
            if joiner.rec.state == "restarting":  # nothing runs: cancel its restart, now
                self._stop_quiet(joiner, None)
                continue
            threading.Thread(
                target=self._stop_quiet,
                args=(joiner, None),
                name=f"stop-{joiner.rec.id[:12]}",
                daemon=True,
            ).start()

    def _plan_restart(self, live: Live, code: int | None) -> bool:
        """After an exit (under ``live.lock``): when its policy asks for a restart, mark it
        ``restarting`` and schedule the start after docker's backoff. Never after a stop,
        at nyxd's shutdown or once removed."""
        rec = live.rec
        if live.stop_requested or self._closing or live.removed:
            return False
        policy = rec.spec.restart_policy()
        if not policy.after_exit(code, rec.restart_count):
            return False
        delay = live.backoff.next(self.clock() - live.started_at)
        rec.state = "restarting"
        rec.restart_count += 1
        logger.bind(policy=str(policy), delay=delay, count=rec.restart_count).info(
            "container restarting"
        )
        live.restart_timer = self.later(delay, lambda: self._restart_due(live))
        return True

    def _restart_due(self, live: Live) -> None:
        """The backoff is over: start it again, unless stopped, removed or nyxd is closing."""
        with live.lock, logger.contextualize(container=live.rec.id):
            rec = live.rec
            if live.removed or self._closing or rec.state != "restarting":
                return
            live.restart_timer = None
            try:
                self._check_ports(rec.spec.ports, exclude=rec.id)
                self._start(live)
            except Exception as exc:
                rec.state = "exited"
                rec.error = f"restart failed: {exc}"
                with contextlib.suppress(Exception):
                    self._persist(live)
                live.done.set()
                logger.bind(error=str(exc)).warning("container restart failed; giving up")

    def _cancel_restart(self, live: Live) -> None:
        timer, live.restart_timer = live.restart_timer, None
        if timer is not None:
            with contextlib.suppress(Exception):
                timer.cancel()

    def _teardown(self, live: Live, timings: dict[str, float] | None = None) -> list[BaseException]:
        """Undo every step recorded for the container, in reverse order; never stop early."""
        return self.steps.undo(live.rec, timings)

    def stop(self, ref: str, timeout: float | None = None, by_hand: bool = True) -> dict[str, Any]:
        """SIGTERM, ``timeout`` seconds of grace, SIGKILL; returns after teardown.

        No restart policy starts it again; ``by_hand`` (not nyxd's shutdown) also keeps an
        ``unless-stopped`` container stopped when nyxd starts again. A container waiting to
        restart just stays stopped.
        """
        live = self._find(ref)
        if timeout is None:
            timeout = live.rec.spec.stop_timeout
        grace = self.stop_grace if timeout is None else max(0.0, timeout)
        with live.lock:
            state = live.rec.state
            if state == "restarting":
                self._cancel_restart(live)
                live.stop_requested = True
                live.rec.state = "stopped"
                live.rec.stopped_by_hand = live.rec.stopped_by_hand or by_hand
                self._persist(live)
                live.done.set()
                return live.rec.public()
            if state != "running":
                return live.rec.public()
            live.stop_requested = True
            # nyxd's shutdown stopping it too does not undo a stop by hand
            live.rec.stopped_by_hand = live.rec.stopped_by_hand or by_hand
        logger.bind(container=live.rec.id, timeout=grace).info("stopping container")
        self.faults.hit("stop:signal")
        if grace > 0:
            self._signal(live, self._stop_signal(live.rec.spec))
        if not live.exited.wait(grace):
            self._signal(live, signal.SIGKILL)
            if not live.exited.wait(15):
                raise RuntimeErrorNyx(f"container {live.rec.name!r} did not die after SIGKILL")
        live.done.wait(60)
        return live.rec.public()

    def _signal(self, live: Live, sig: int) -> None:
        pid = live.rec.pid
        if self.host.signal_direct and pid and not live.exited.is_set():
            # through the runtime's pidfd of the init (never a process that reused its pid),
            # adopted containers included; else kill(2) while nyxd reaps its own children
            send = getattr(self.host.runtime, "send_signal", None)
            try:
                if send is not None and send(live.rec.id, pid, sig):
                    return
                if send is None and not live.adopted:
                    os.kill(pid, sig)
                    return
            except ProcessLookupError:
                return
            except OSError:
                pass
        with contextlib.suppress(Exception):
            self.host.runtime.kill(live.rec.id, sig)

    def remove(self, ref: str, force: bool = False) -> None:
        live = self._find(ref)
        self._refuse_if_joined(live)  # before a forced stop: refused, nothing changes
        if live.rec.state in _HOLDS_PORTS:
            if not force:
                raise ConflictError(
                    f"container {live.rec.name!r} is {live.rec.state}; stop it first or force "
                    "removal"
                )
            self.stop(live.rec.id, timeout=0)
        self._remove(live)

    def _remove(self, live: Live) -> None:
        with live.lock:
            if live.removed:
                return
            if live.rec.state in _HOLDS_PORTS:
                raise ConflictError(f"container {live.rec.name!r} is {live.rec.state}")
            self._refuse_if_joined(live)
            self._cancel_restart(live)
            self.faults.hit("rm:teardown")
            self._teardown(live)
            live.removed = True
            live.done.set()
        self.faults.hit("rm:forget")
        self._forget(live)
        logger.bind(container=live.rec.id).info("container removed")

    def _refuse_if_joined(self, live: Live) -> None:
        joined = self.joiners(live.rec.id)
        if joined:
            names = ", ".join(repr(j.rec.name) for j in joined)
            raise ConflictError(
                f"container {live.rec.name!r} is the network of {names} "
                "(network_mode container:); remove them first"
            )

    def _forget(self, live: Live) -> None:
        live.removed = True
        with self.lock:
            self.live.pop(live.rec.id, None)
            self._tombstones[live.rec.id] = live.rec.public()
            while len(self._tombstones) > _TOMBSTONES:
                self._tombstones.popitem(last=False)
            self._release_volumes(live.rec.spec)
        self.store.delete(live.rec.id)

    def wait(self, ref: str, timeout: float | None = None) -> dict[str, Any]:
        """Block until the container has exited and been torn down: ``{"exit_code": n}``."""
        try:
            live = self._find(ref)
        except NotFoundError:
            with self.lock:
                for cid, pub in reversed(self._tombstones.items()):
                    if cid == ref or pub["name"] == ref or cid.startswith(ref):
                        return {"exit_code": pub["exit_code"], "state": pub["state"]}
            raise
        if not live.done.wait(timeout):
            raise ConflictError(f"container {live.rec.name!r} still running after {timeout}s")
        return {"exit_code": live.rec.exit_code, "state": live.rec.state}

    def logs(self, ref: str, follow: bool = False, poll: float = 0.1) -> Iterator[bytes]:
        """The container's output; with ``follow`` until it has exited.

        Not lazy: an unknown ``ref`` raises :class:`NotFoundError` here, and the log is
        opened now, so a client that attaches before the start (``nyx run``) reads every
        byte even when ``--rm`` removes the container before it has read them.
        """
        live = self._find(ref)
        path = self.store.log_path(live.rec.id)
        try:
            f = path.open("rb")
        except FileNotFoundError:
            return iter(())
        return self._read_log(live, f, follow, poll)

    @staticmethod
    def _read_log(live: Live, f: Any, follow: bool, poll: float) -> Iterator[bytes]:
        with f:
            while True:
                chunk = f.read(65536)
                if chunk:
                    yield chunk
                    continue
                failed = live.rec.state == "created" and live.rec.error is not None
                ended = live.done.is_set() and live.rec.state != "restarting"
                if not follow or ended or live.removed or failed:
                    rest = f.read()
                    if rest:
                        yield rest
                    return
                time.sleep(poll)

    # ------------------------------------------------------------------ daemon lifecycle

    def reconcile(self) -> dict[str, int]:
        """After a (re)start: re-adopt what still runs, undo what is left of the rest
        (:class:`~nyx_cli.daemon._reconcile.Reconciler`)."""
        return self.reconciler.run()

    def shutdown(self, grace: float = 5.0) -> None:
        """Stop every running container (in parallel), leaving the host clean.

        Not a stop by hand: ``always`` and ``unless-stopped`` containers start again with
        nyxd; a container waiting to restart is left stopped, and nothing restarts.
        """
        self._closing = True
        with self.lock:
            lives = list(self.live.values())
        for live in lives:
            with live.lock:
                if live.rec.state == "restarting":
                    self._cancel_restart(live)
                    live.rec.state = "stopped"
                    with contextlib.suppress(Exception):
                        self._persist(live)
                    live.done.set()
        with self.lock:
            running = [v for v in self.live.values() if v.rec.state == "running"]
        threads = [
            threading.Thread(target=self._stop_quiet, args=(v, grace), daemon=True) for v in running
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(grace + 30)
        with self.lock:
            lives = list(self.live.values())
        for live in lives:
            if live.rec.spec.rm and live.rec.state != "running":
                with contextlib.suppress(Exception):
                    self._remove(live)

    def _stop_quiet(self, live: Live, grace: float | None) -> None:
        try:
            self.stop(live.rec.id, timeout=grace, by_hand=False)
        except Exception as exc:
            logger.bind(container=live.rec.id, error=str(exc)).warning("stop at shutdown failed")
