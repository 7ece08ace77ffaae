"""The ordered steps that run one container, each with apply, undo and a persisted flag.

``netns`` → ``network`` (the driver's setup, once per network) → ``sysctls`` (``net.*``
in the container's netns) → ``dns`` (the provider's registration, when the DNS policy says
so) → ``etc`` (hosts, hostname, resolv.conf) → ``rootfs`` (overlay mount and runc bundle) →
``runtime`` (``runc run -d``).

``network_mode`` changes which run: ``none`` makes a netns with ``lo`` up and no network;
``host`` and ``container:<ref>`` make no netns and no network of their own (runc gets no
network namespace, or the other container's path).

A step records that it began (its flag on the :class:`ContainerRecord`, persisted) *before*
it acts, so a nyxd killed half-way knows what to undo after a restart; every undo is
idempotent and works from the record alone. A start that fails undoes the steps already
begun, in reverse order, then raises. Teardown undoes every step whose flag is set, in
reverse order, and never stops at the first failure (netavark's validate-then-apply with an
undo list). :meth:`Steps.checkpoint` runs before each step: the place a test-only fault
point can stop nyxd (see :mod:`nyx_cli.daemon._faults`).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from loguru import logger

from nyx_core import DnsDecision, NyxError, SetupOptions, SetupResult

from ..errors import CommandError, RuntimeErrorNyx
from ._models import HOST_GATEWAY, joined_container
from ._state import ContainerRecord

if TYPE_CHECKING:
    from ._models import ContainerSpec
    from ._supervisor import Supervisor

__all__ = ["STEPS", "Run", "Step", "Steps", "driver_resolv_conf", "resolv_conf_with"]


@dataclass
class Run:
    """What one start knows while its steps run."""

    rec: ContainerRecord
    image: Any
    cdir: Path
    netns: Path
    internal: list[str]
    decision: DnsDecision
    results: list[SetupResult] = field(default_factory=list)
    mounts: list[tuple[str, str, bool]] = field(default_factory=list)
    bundle: Path | None = None
    pid: int | None = None
    marks: list[tuple[str, float]] = field(default_factory=list)


class Step:
    """One step: :meth:`begin` marks the record, :meth:`apply` acts, :meth:`undo` reverts."""

    name: ClassVar[str]
    flag: ClassVar[str | None] = None  # the ContainerRecord field that says "begun"

    def wanted(self, sup: Supervisor, run: Run) -> bool:
        """Whether this container needs the step at all (DNS may not)."""
        return True

    def begin(self, rec: ContainerRecord, run: Run) -> None:
        if self.flag:
            setattr(rec, self.flag, True)

    def begun(self, rec: ContainerRecord) -> bool:
        return bool(getattr(rec, self.flag)) if self.flag else False

    def clear(self, rec: ContainerRecord) -> None:
        if self.flag:
            setattr(rec, self.flag, False)

    def apply(self, sup: Supervisor, run: Run) -> None:
        raise NotImplementedError

    def undo(self, sup: Supervisor, rec: ContainerRecord) -> None:
        raise NotImplementedError


def _own_netns(rec: ContainerRecord) -> bool:
    """A netns of its own: the default mode and ``none`` (not ``host``/``container:``)."""
    return rec.spec.network_mode in (None, "none")


class NetnsStep(Step):
    name = "netns"

    def wanted(self, sup: Supervisor, run: Run) -> bool:
        return _own_netns(run.rec)

    def begin(self, rec: ContainerRecord, run: Run) -> None:
        rec.netns_path = str(run.netns)

    def begun(self, rec: ContainerRecord) -> bool:
        return bool(rec.netns_path)

    def clear(self, rec: ContainerRecord) -> None:
        rec.netns_path = None

    def apply(self, sup: Supervisor, run: Run) -> None:
        sup.host.create_netns(run.netns)
        if run.rec.spec.network_mode == "none":
            sup.host.loopback_up(run.netns)  # lo only; no driver does it

    def undo(self, sup: Supervisor, rec: ContainerRecord) -> None:
        if rec.netns_path:
            sup.host.delete_netns(Path(rec.netns_path))


class NetworkStep(Step):
    name = "network"
    flag = "network_setup"

    def wanted(self, sup: Supervisor, run: Run) -> bool:
        return run.rec.spec.network_mode is None

    def apply(self, sup: Supervisor, run: Run) -> None:
        rec, spec = run.rec, run.rec.spec
        for i, att in enumerate(spec.attachments()):
            network = sup.networks.canonical(att.name)
            opts = SetupOptions(
                network=network,
                subnet=sup.networks.gateway(att.name),
                interface=f"eth{i}",
                internal=network in run.internal,
                hostname=rec.hostname,
                aliases=list(att.aliases),
                labels=dict(spec.labels),
                static_ip=att.ipv4_address,
                static_ip6=att.ipv6_address,
                mac=att.mac_address,
            )
            ports = spec.ports if i == 0 else []
            # no lock: drivers take setups and teardowns of different containers in
            # parallel (the conformance kit checks it); one at a time per container
            run.results.append(sup.backend.setup(rec.id, str(run.netns), ports, opts))
        rec.ips = [str(ip) for r in run.results for ip in r.ips]

    def undo(self, sup: Supervisor, rec: ContainerRecord) -> None:
        sup.backend.teardown(rec.id, rec.netns_path or "")


class SysctlStep(Step):
    """``net.*`` sysctls in the container's own netns (they go with it: nothing to undo)."""

    name = "sysctls"

    def wanted(self, sup: Supervisor, run: Run) -> bool:
        return bool(run.rec.spec.sysctls) and _own_netns(run.rec)

    def apply(self, sup: Supervisor, run: Run) -> None:
        sup.host.set_sysctls(run.netns, dict(run.rec.spec.sysctls))

    def undo(self, sup: Supervisor, rec: ContainerRecord) -> None:
        pass


class DnsStep(Step):
    name = "dns"
    flag = "dns_registered"

    def wanted(self, sup: Supervisor, run: Run) -> bool:
        return run.decision.use_provider and sup.dns is not None

    def apply(self, sup: Supervisor, run: Run) -> None:
        assert sup.dns is not None
        rec = run.rec
        with sup.dns_lock:
            sup.dns.register(
                rec.id,
                rec.hostname,
                [ip for r in run.results for ip in r.ips],
                sup.dns_aliases(rec),
                rec.networks,
                run.internal,
            )

    def undo(self, sup: Supervisor, rec: ContainerRecord) -> None:
        if sup.dns is not None:
            with sup.dns_lock:
                sup.dns.deregister(rec.id)


class EtcStep(Step):
    """hosts, hostname and resolv.conf under the container's run dir (removed with it).

    ``network_mode: container:<ref>`` shares the other container's three files; ``host``
    starts its hosts file from the host's.
    """

    name = "etc"

    def apply(self, sup: Supervisor, run: Run) -> None:
        rec, cdir, spec = run.rec, run.cdir, run.rec.spec
        if joined_container(spec.network_mode) is not None:
            other = sup.run_dir / "containers" / (rec.network_of or "?")
            run.mounts = [
                (str(other / "hosts"), "/etc/hosts", False),
                (str(other / "hostname"), "/etc/hostname", False),
            ]
            if (other / "resolv.conf").exists():
                run.mounts.append((str(other / "resolv.conf"), "/etc/resolv.conf", False))
            return
        hostname = cdir / "hostname"
        hostname.write_text(rec.hostname + "\n")
        hosts = cdir / "hosts"
        if spec.network_mode == "host":
            lines = _host_file("/etc/hosts").rstrip("\n").splitlines()
        else:
            lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        names = [rec.hostname] if rec.name == rec.hostname else [rec.hostname, rec.name]
        if spec.domainname:
            names.insert(0, f"{rec.hostname}.{spec.domainname}")
        first: dict[bool, str] = {}  # the first address of each family (IPv6: has a ':')
        for ip in rec.ips:
            first.setdefault(":" in ip, ip)
        lines += [f"{ip}\t{' '.join(names)}" for ip in first.values()]
        for entry in spec.extra_hosts:
            name, _, addr = entry.partition(":")
            if addr == HOST_GATEWAY:
                addr = sup.host_gateway(rec, run.results)
            lines.append(f"{addr}\t{name}")
        hosts.write_text("\n".join(lines) + "\n")
        run.mounts = [
            (str(hosts), "/etc/hosts", False),
            (str(hostname), "/etc/hostname", False),
        ]
        text: str | None = None
        source = run.decision.resolv_conf
        embedded = source == "provider" and sup.dns is not None
        if embedded:
            assert sup.dns is not None
            with sup.dns_lock:
                text = sup.dns.resolv_conf(rec.id)
        elif source == "driver" or source == "provider":
            text = driver_resolv_conf(run.results)
        if spec.dns_servers or spec.dns_search or spec.dns_options:
            text = resolv_conf_with(
                text or "", spec.dns_servers, spec.dns_search, spec.dns_options, embedded
            )
        if text is not None:
            resolv = cdir / "resolv.conf"
            resolv.write_text(text if text.endswith("\n") else text + "\n")
            run.mounts.append((str(resolv), "/etc/resolv.conf", False))

    def undo(self, sup: Supervisor, rec: ContainerRecord) -> None:
        pass  # the files go with the container's run dir at the end of the teardown


class RootfsStep(Step):
    name = "rootfs"
    flag = "rootfs_mounted"

    def apply(self, sup: Supervisor, run: Run) -> None:
        spec, host = run.rec.spec, sup.host
        merged = host.rootfs.mount(host.images.layer_dirs(run.image), run.cdir)
        process = host.process_from_image(
            getattr(run.image, "config", None) or {},
            spec.entrypoint,
            spec.command,
            spec.env,
            spec.workdir,
            spec.user,
        )
        run.bundle = run.cdir / "bundle"
        host.runtime.write_bundle(
            run.bundle,
            rootfs=Path(merged),
            process=process,
            hostname=run.rec.hostname,
            netns_path=None if spec.network_mode == "host" else str(run.netns),
            mounts=[*run.mounts, *_container_mounts(sup, run, Path(merged))],
            host_network=spec.network_mode == "host",
            sysctl={"kernel.domainname": spec.domainname} if spec.domainname else None,
            **_runtime_options(sup, spec),
        )

    def undo(self, sup: Supervisor, rec: ContainerRecord) -> None:
        sup.host.rootfs.unmount(sup.run_dir / "containers" / rec.id)


def _container_mounts(sup: Supervisor, run: Run, merged: Path) -> list[Any]:
    """The spec's binds, volumes (copied up), tmpfs and files (:mod:`._mounts`)."""
    spec = run.rec.spec
    if not spec.mounts and not spec.files:
        return []
    from ._mounts import prepare

    return prepare(spec, merged, run.cdir, sup.settings, sup.volumes)


def _runtime_options(sup: Supervisor, spec: ContainerSpec) -> dict[str, Any]:
    """``capabilities`` (cap_add/cap_drop over the runtime's set) and ``init``, when asked."""
    out: dict[str, Any] = {}
    if spec.cap_add or spec.cap_drop:
        from ..runtime._seccomp import DEFAULT_CAPABILITIES, capability_set

        base = getattr(sup.host.runtime, "capabilities", DEFAULT_CAPABILITIES)
        out["capabilities"] = capability_set(spec.cap_add, spec.cap_drop, base)
    if spec.init:
        out["init"] = sup.init_binary()
    return out


class RuntimeStep(Step):
    name = "runtime"
    flag = "runc_created"

    def apply(self, sup: Supervisor, run: Run) -> None:
        assert run.bundle is not None
        try:
            run.pid = sup.host.runtime.start(run.rec.id, run.bundle, sup.store.log_path(run.rec.id))
        except BaseException as exc:
            raise classify_start_error(exc) from exc

    def undo(self, sup: Supervisor, rec: ContainerRecord) -> None:
        sup.host.runtime.delete(rec.id, True)


STEPS: tuple[Step, ...] = (
    NetnsStep(),
    NetworkStep(),
    SysctlStep(),
    DnsStep(),
    EtcStep(),
    RootfsStep(),
    RuntimeStep(),
)


class Steps:
    """Runs :data:`STEPS` for one container and undoes them."""

    def __init__(self, sup: Supervisor, steps: Sequence[Step] = STEPS) -> None:
        self.sup = sup
        self.steps = tuple(steps)

    def checkpoint(self, point: str) -> None:
        """Called before each step (``start:<step>``) and undo (``undo:<step>``)."""
        self.sup.faults.hit(point)

    def apply(self, run: Run, persist: Callable[[], None]) -> None:
        """Every step in order; on failure undo what began (in reverse) and re-raise."""
        begun: list[Step] = []
        run.marks.append(("begin", time.perf_counter()))
        try:
            for step in self.steps:
                if not step.wanted(self.sup, run):
                    continue
                self.checkpoint(f"start:{step.name}")
                step.begin(run.rec, run)
                if step.flag or step.name == "netns":
                    persist()
                begun.append(step)
                step.apply(self.sup, run)
                run.marks.append((step.name, time.perf_counter()))
            self.checkpoint("start:done")
        except BaseException as exc:
            errors = []
            for step in reversed(begun):
                try:
                    step.undo(self.sup, run.rec)
                except Exception as uexc:
                    errors.append(uexc)
                    logger.bind(step=step.name, error=str(uexc)).warning("undo step failed")
                step.clear(run.rec)
            run.rec.ips = []
            shutil.rmtree(run.cdir, ignore_errors=True)
            run.rec.error = str(exc)
            persist()
            logger.bind(error=str(exc), undo_errors=[str(e) for e in errors]).warning(
                "container start failed; undone"
            )
            raise

    def undo(
        self, rec: ContainerRecord, timings: dict[str, float] | None = None
    ) -> list[BaseException]:
        """Undo every step the record says began, in reverse; never stop early.
        ``timings`` gets the milliseconds each undo took (for the "container finished" log)."""
        errors: list[BaseException] = []
        for step in reversed(self.steps):
            if not step.begun(rec):
                continue
            self.checkpoint(f"undo:{step.name}")
            began = time.perf_counter()
            try:
                step.undo(self.sup, rec)
            except Exception as exc:
                errors.append(exc)
                logger.bind(container=rec.id, step=step.name, error=str(exc)).warning(
                    "teardown step"
                )
            step.clear(rec)
            if timings is not None:
                timings[step.name] = round((time.perf_counter() - began) * 1000, 1)
        cdir = self.sup.run_dir / "containers" / rec.id
        if not rec.rootfs_mounted and not os.path.ismount(cdir / "rootfs"):
            shutil.rmtree(cdir, ignore_errors=True)
        if errors:
            rec.error = "; ".join(str(e) for e in errors)
        return errors

    @staticmethod
    def timings(run: Run) -> dict[str, float]:
        """Milliseconds each step took (for the "container started" log line)."""
        marks = run.marks
        return {n: round((t - marks[i][1]) * 1000, 1) for i, (n, t) in enumerate(marks[1:])}


def classify_start_error(exc: BaseException) -> Exception:
    """runc's failure as what the user did wrong: 127 not found, 126 not executable."""
    text = str(exc)
    low = text.lower()
    if "executable file not found" in low or "no such file or directory" in low:
        return CommandError(f"container command not found: {text}", 127)
    if "permission denied" in low:
        return CommandError(f"container command cannot be executed: {text}", 126)
    if isinstance(exc, NyxError):
        return exc
    return RuntimeErrorNyx(f"runc start failed: {text}")


def driver_resolv_conf(results: Sequence[SetupResult]) -> str:
    """resolv.conf from what the driver returned (a CNI result's ``dns``), else the host's."""
    servers = [str(r.dns_server) for r in results if r.dns_server is not None]
    search = [s for r in results for s in r.dns_search]
    if servers:
        lines = [f"nameserver {s}" for s in dict.fromkeys(servers)]
        if search:
            lines.append("search " + " ".join(dict.fromkeys(search)))
        return "\n".join(lines) + "\n"
    return _host_file("/etc/resolv.conf")


def _host_file(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def resolv_conf_with(
    base: str,
    servers: Sequence[str],
    search: Sequence[str],
    options: Sequence[str],
    embedded_first: bool,
) -> str:
    """``base`` (the provider's, the driver's or the host's resolv.conf) with a container's
    own ``dns``/``dns_search``/``dns_opt``.

    With ``embedded_first`` (the DNS policy gives the container embedded DNS) the base's
    nameservers and search domains stay first and the container's follow; otherwise the
    container's replace the base's. Options are merged (the container's last, so they win).
    ``search ["."]`` means no search domains.
    """
    have_servers: list[str] = []
    have_search: list[str] = []
    have_options: list[str] = []
    for line in base.splitlines():
        words = line.split()
        if not words or words[0].startswith(("#", ";")):
            continue
        if words[0] == "nameserver" and len(words) > 1:
            have_servers.append(words[1])
        elif words[0] in ("search", "domain"):
            have_search = words[1:]
        elif words[0] == "options":
            have_options += words[1:]
    if embedded_first:
        servers = [*have_servers, *servers]
        search = [*have_search, *(s for s in search if s != ".")]
    else:
        servers = list(servers) or have_servers
        search = list(search) or have_search
    search = [s for s in search if s != "."]
    lines = [f"nameserver {s}" for s in dict.fromkeys(servers)]
    if search:
        lines.append("search " + " ".join(dict.fromkeys(search)))
    merged = list(dict.fromkeys([*have_options, *options]))
    if merged:
        lines.append("options " + " ".join(merged))
    return "\n".join(lines) + "\n"
