"""Reconciliation: what a (re)started nyxd does with the containers a previous one recorded.

A container whose runc state is still ``running`` with the recorded pid, and whose netns is
still mounted where nyxd put it, is re-adopted (DNS records registered again, a watcher
started). Anything else a previous nyxd recorded is stopped and every step it recorded as
begun is undone (:class:`~nyx_cli.daemon._steps.Steps`): netns, veths, firewall elements,
leases, DNS records, mounts. Leftovers nothing records (a netns mount or a runc container of
an unknown id) are cleaned too. Then the containers whose restart policy says so
(``always``; ``unless-stopped`` unless stopped by hand) are started again: after a crash of
nyxd, its shutdown or a reboot of the host.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

from ._live import Live
from ._models import ContainerSpec
from ._state import ContainerRecord, now

if TYPE_CHECKING:
    from ._supervisor import Supervisor

__all__ = ["Reconciler"]


class Reconciler:
    """Runs once at start, before the API serves (see :meth:`run`)."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self._images: dict[str, Any] = {}  # image by reference, during one run

    def run(self) -> dict[str, int]:
        """After a (re)start: re-adopt containers still running, undo what is left of others.

        A container whose runc state is still ``running`` with the recorded pid, and whose
        netns is still a namespace mounted where nyxd put it, is adopted (its DNS records
        registered again, a watcher started; its exit code is read from what its monitor
        records, see :mod:`nyx_cli.runtime._monitor`). One that ended while no nyxd watched
        gets the exit code and time its monitor recorded. Anything else a previous nyxd
        recorded is stopped and torn down: netns, veths, nft elements, leases, DNS
        records, mounts.
        """
        sup = self.sup
        records, broken = sup.store.load_all()
        # what runc knows, once: a ``runc state`` per record would cost an exec each
        listed = self._runtime_list()
        states = None if listed is None else {_item_id(item): item for item in listed}
        self._images.clear()
        # containers in another one's netns (network_mode container:) after their owner
        records.sort(key=lambda r: r.network_of is not None)
        stopped = cleaned = adopted = 0
        known = {r.id for r in records}
        again: list[Live] = []
        for rec in records:
            live = Live(rec)
            dirty = rec.runc_created or rec.network_setup or rec.dns_registered
            dirty = dirty or rec.rootfs_mounted or bool(rec.netns_path)
            with sup.lock:
                sup.live[rec.id] = live
            if rec.state == "running" and sup.readopt and self._adopt(live, states):
                adopted += 1
                continue
            # a record with nothing to undo or to change stays as it is on disk
            changed = dirty or rec.state in ("running", "restarting")
            if rec.state == "running" or dirty:
                with logger.contextualize(container=rec.id):
                    if rec.state == "running":
                        stopped += self._end(rec)
                    sup._teardown(live)
                    cleaned += 1
            if rec.state == "restarting":  # was waiting for its restart when nyxd went away
                rec.state = "exited"
            live.exited.set()
            live.done.set()
            if rec.spec.rm and rec.state != "created":
                sup._remove(live)
            else:
                if changed:
                    sup._persist(live)
                if rec.state != "created" and rec.spec.restart_policy().at_nyxd_start(
                    rec.stopped_by_hand
                ):
                    again.append(live)
        for cid in broken:
            logger.bind(container=cid).warning("unreadable container state; cleaning up")
            self._clean_orphan(cid)
        for leftover in sorted((sup.run_dir / "netns").glob("*")):
            if leftover.name not in known:
                self._clean_orphan(leftover.name)
        for cdir in sorted((sup.run_dir / "containers").glob("*")):
            # a run dir no running container uses: a start killed before its first step
            # (the dir is made first), or a container nothing records any more
            if cdir.name not in known:
                self._clean_orphan(cdir.name)
                continue
            used = sup.live.get(cdir.name)
            if used is not None and (used.adopted or used.rec.rootfs_mounted):
                continue
            if not os.path.ismount(cdir / "rootfs"):
                shutil.rmtree(cdir, ignore_errors=True)
        with contextlib.suppress(Exception):
            for item in listed or []:
                oid = _item_id(item)
                if isinstance(oid, str) and oid not in known:
                    self._clean_orphan(oid)
        self._images.clear()
        restarted = sum(self._start_again(live) for live in again)
        if stopped or cleaned or adopted or restarted:
            logger.bind(
                stopped=stopped, cleaned=cleaned, adopted=adopted, restarted=restarted
            ).info("reconciled previous state")
        return {"stopped": stopped, "cleaned": cleaned, "adopted": adopted}

    def _start_again(self, live: Live) -> bool:
        """Start a container its restart policy brings back with nyxd (its steps were all
        undone above); a failure is recorded on it and logged, nyxd starts anyway."""
        sup = self.sup
        rec = live.rec
        with live.lock, logger.contextualize(container=rec.id):
            try:
                sup._check_ports(rec.spec.ports, exclude=rec.id)
                sup._start(live)
            except Exception as exc:
                rec.error = f"restart at nyxd start failed: {exc}"
                with contextlib.suppress(Exception):
                    sup._persist(live)
                logger.bind(error=str(exc)).warning("container not started again")
                return False
        logger.bind(container=rec.id, policy=rec.spec.restart).info(
            "container started again with nyxd"
        )
        return True

    def _runtime_list(self) -> list[Any] | None:
        """Every container the runtime knows (``runc list``), None when it cannot say."""
        try:
            return list(self.sup.host.runtime.list())
        except Exception as exc:
            logger.bind(error=str(exc)).warning("runtime list failed; asking per container")
            return None

    def _image(self, ref: str) -> Any:
        if ref not in self._images:
            self._images[ref] = self.sup._image(ref)
        return self._images[ref]

    def _adopt(self, live: Live, states: dict[Any, Any] | None = None) -> bool:
        """Adopt ``live`` when it still runs. ``states``: the runtime's states by id (from
        one list), else it is asked for this container's state."""
        sup = self.sup
        rec = live.rec
        if states is not None:
            st = states.get(rec.id)
        else:
            try:
                st = sup.host.runtime.state(rec.id)
            except Exception:
                return False
        if not isinstance(st, dict) or st.get("status") != "running":
            return False
        if not rec.pid or st.get("pid") != rec.pid:
            return False
        mode = rec.spec.network_mode
        if mode is None and not rec.network_setup:
            return False
        if mode in (None, "none") and (
            not rec.netns_path or not sup.host.netns_alive(Path(rec.netns_path))
        ):
            # its netns mount went with the previous nyxd's mount namespace: nyxd could no
            # longer manage its network, so it is stopped and torn down instead
            return False
        if rec.network_of is not None:
            with sup.lock:
                owner = sup.live.get(rec.network_of)
            if owner is None or owner.rec.state != "running" or not owner.adopted:
                return False  # the netns it joined was not re-adopted
        live.adopted = True
        live.started_at = sup.clock()
        recorded = rec.model_dump_json()
        with logger.contextualize(container=rec.id):
            if rec.dns_registered:
                if sup.dns is None:
                    rec.dns_registered = False
                else:
                    try:
                        ips = [ipaddress.ip_address(ip) for ip in rec.ips]
                        with sup.dns_lock:
                            sup.dns.register(
                                rec.id,
                                rec.hostname,
                                ips,
                                sup.dns_aliases(rec),
                                rec.networks,
                                sup._recorded_internal(rec),
                            )
                    except Exception as exc:
                        logger.bind(error=str(exc)).warning("DNS re-registration failed")
            try:
                sup.health.start(live, self._image(rec.spec.image), keep=True)
            except Exception as exc:
                logger.bind(error=str(exc)).warning("healthcheck not resumed")
            if rec.model_dump_json() != recorded:  # unchanged: its record is on disk already
                sup._persist(live)
            # debug: a thousand of them would be a thousand lines (and ~0.1 ms each); the
            # summary line counts them
            logger.bind(pid=rec.pid).debug("container re-adopted")
        sup._watch_exit(live, rec.pid)
        return True

    def _end(self, rec: ContainerRecord) -> int:
        """A container recorded running that cannot be adopted: its exit code and time as its
        monitor recorded them when it ended while no nyxd watched (0 returned), else it is
        killed now (1 returned; its code is then that of the kill, 137)."""
        runtime = self.sup.host.runtime
        status = getattr(runtime, "exit_status", None)
        ended = status(rec.id, rec.pid) if callable(status) and rec.pid else None
        killed = ended is None
        if killed:
            self._kill_leftover(rec)
            rec.error = "stopped by nyxd at restart"
            code = None
            if callable(status) and rec.pid:
                with contextlib.suppress(Exception):
                    code = runtime.wait(rec.id, rec.pid, 5)
            rec.exit_code = code
            rec.finished = now()
        else:
            assert ended is not None
            rec.exit_code = ended[0]
            rec.finished = datetime.fromtimestamp(ended[1], UTC).isoformat(timespec="milliseconds")
            logger.bind(exit_code=rec.exit_code).info("container ended while nyxd was away")
        rec.state = "exited"
        rec.pid = None
        return int(killed)

    def _kill_leftover(self, rec: ContainerRecord) -> None:
        sup = self.sup
        with contextlib.suppress(Exception):
            sup.host.runtime.kill(rec.id, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                st = sup.host.runtime.state(rec.id)
            except Exception:
                return
            status = st.get("status") if isinstance(st, dict) else getattr(st, "status", st)
            if status in (None, "stopped") or st is None:
                return
            time.sleep(0.05)

    def _clean_orphan(self, cid: str) -> None:
        sup = self.sup
        live = Live(
            ContainerRecord(
                id=cid,
                name=cid,
                spec=ContainerSpec(image="?"),
                hostname="orphan",
                netns_path=str(sup.run_dir / "netns" / cid),
                network_setup=True,
                dns_registered=sup.dns is not None,
                rootfs_mounted=(sup.run_dir / "containers" / cid).exists(),
                runc_created=True,
            )
        )
        with contextlib.suppress(Exception):
            sup.host.runtime.kill(cid, signal.SIGKILL)
        sup._teardown(live)
        sup.store.delete(cid)


def _item_id(item: Any) -> Any:
    """The id of one entry of the runtime's list (a dict, or an object with ``id``)."""
    return item.get("id") if isinstance(item, dict) else getattr(item, "id", item)
