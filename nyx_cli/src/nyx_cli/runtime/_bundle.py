"""The OCI bundle: what ``config.json`` says about a container.

:class:`_BundleWriter` (the half of :class:`~nyx_cli.runtime._runc.RuncRuntime` that writes
bundles) puts there the namespaces pid/ipc/uts/mount plus the prepared network namespace,
docker's default capabilities and the seccomp profile that goes with them
(:mod:`nyx_cli.runtime._seccomp`), a pids limit, masked and read-only paths, the default
mounts and the extra ones (:class:`BundleMount`), and the ``--init`` binary at
:data:`INIT_DESTINATION`.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from nyx_core.errors import ConfigError

from ._inroot import _open_in_root
from ._process import ProcessSpec, resolve_user
from ._seccomp import CAPABILITIES, seccomp_profile

__all__ = ["INIT_DESTINATION", "BundleMount"]

MASKED_PATHS = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
#: where ``--init``'s binary appears in the container (a read-only bind on /dev's tmpfs:
#: nothing is written into the image's rootfs)
INIT_DESTINATION = "/dev/init"


@dataclass(frozen=True)
class BundleMount:
    """A mount of the bundle besides the defaults: a bind of a host path, or a tmpfs.

    ``destination`` is absolute in the container (runc resolves it inside the rootfs);
    ``options`` are extra mount options (a tmpfs' ``size=``, ``mode=``, ``exec``...).
    """

    destination: str
    source: str = ""
    kind: Literal["bind", "tmpfs"] = "bind"
    readonly: bool = False
    options: tuple[str, ...] = ()

    def oci(self) -> dict[str, Any]:
        """The OCI ``mounts`` entry."""
        if not self.destination.startswith("/"):
            raise ConfigError(f"mounts: destination {self.destination!r} is not absolute")
        ro = ["ro"] if self.readonly else []
        if self.kind == "tmpfs":
            options = ["nosuid", "nodev", *self.options, *ro]
            if "exec" not in options:
                options.insert(2, "noexec")
            return {
                "destination": self.destination,
                "type": "tmpfs",
                "source": "tmpfs",
                "options": options,
            }
        options = ["rbind", "rprivate", *ro, *self.options]
        return {
            "destination": self.destination,
            "type": "bind",
            "source": self.source,
            "options": options,
        }


def _bundle_mounts(mounts: Sequence[BundleMount | tuple[str, str, bool]]) -> list[dict[str, Any]]:
    """The extra mounts as OCI entries, parents before children (a volume on ``/etc`` is
    mounted before nyx's ``/etc/hosts``, which then lies on top of it)."""
    typed = [
        m if isinstance(m, BundleMount) else BundleMount(m[1], m[0], "bind", m[2]) for m in mounts
    ]
    depth = [len(PurePosixPath(m.destination).parts) for m in typed]
    order = sorted(range(len(typed)), key=lambda i: depth[i])
    return [typed[i].oci() for i in order]


class _BundleWriter:
    """Writes OCI bundles (the base of :class:`~nyx_cli.runtime._runc.RuncRuntime`, which
    sets these attributes)."""

    seccomp: bool
    capabilities: list[str]
    pids_limit: int
    #: the containers' RLIMIT_NOFILE (soft, hard); None: runc's own, which it inherits
    nofile: tuple[int, int] | None = None
    cgroup_parent: str

    def write_bundle(
        self,
        bundle: Path,
        *,
        rootfs: Path,
        process: ProcessSpec,
        hostname: str,
        netns_path: str | None,
        mounts: Sequence[BundleMount | tuple[str, str, bool]],
        container_id: str | None = None,
        host_network: bool = False,
        sysctl: Mapping[str, str] | None = None,
        capabilities: Sequence[str] | None = None,
        init: Path | None = None,
    ) -> None:
        """Write ``bundle/config.json`` for ``process`` in ``rootfs``.

        ``netns_path`` is the prepared network namespace (``None``: a new, empty one);
        ``host_network=True`` (``network_mode: host``, and only then) leaves the container
        in the host's network namespace: no network namespace at all. ``sysctl`` goes to
        the OCI ``linux.sysctl`` (nyxd passes only ``kernel.domainname``, namespaced by the
        container's own UTS namespace; ``net.*`` ones nyxd writes itself, before, so an
        unknown one is a clear error). ``mounts`` are extra mounts: :class:`BundleMount`
        or bind tuples ``(source, destination, readonly)``, mounted parents first.
        ``capabilities`` replaces the runtime's set for this container (the seccomp profile
        follows it). ``init``: a static init binary, bind-mounted read-only at
        :data:`INIT_DESTINATION` and run as PID 1 (``init -- args``): it reaps zombies and
        forwards signals. The cgroup is ``<cgroup_parent>/<container_id>`` (set by
        :meth:`start` when not given here). The working directory is created in the rootfs
        when missing.
        """
        rootfs = Path(rootfs)
        caps = self.capabilities
        if capabilities is not None:
            unknown = sorted(set(capabilities) - CAPABILITIES)
            if unknown:
                raise ConfigError(f"capabilities: unknown capability {', '.join(unknown)}")
            caps = list(dict.fromkeys(capabilities))
        args = list(process.args)
        extra_mounts = list(mounts)
        if init is not None:
            args = [INIT_DESTINATION, "--", *args]
            extra_mounts.append(BundleMount(INIT_DESTINATION, str(init), "bind", True))
        uid, gid, extra, home = resolve_user(rootfs, process.user)
        env = list(process.env)
        if not any(e.startswith("HOSTNAME=") for e in env):
            env.append(f"HOSTNAME={hostname}")
        if not any(e.startswith("HOME=") for e in env):
            env.append(f"HOME={home}")
        try:
            os.close(_open_in_root(rootfs, process.cwd, mkdir=True))
        except OSError as exc:
            raise ConfigError(
                f"workdir: {process.cwd!r} cannot be created in the image ({exc.strerror})"
            ) from exc
        if host_network and netns_path is not None:
            raise ConfigError("host_network: a netns_path was given too")
        netns: dict[str, str] = {"type": "network"}
        if netns_path is not None:
            netns["path"] = str(netns_path)
        namespaces = [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]
        if not host_network:
            namespaces.append(netns)
        config: dict[str, Any] = {
            "ociVersion": "1.0.2-dev",
            "process": {
                "terminal": False,
                "user": {"uid": uid, "gid": gid, "additionalGids": extra},
                "args": args,
                "env": env,
                "cwd": process.cwd,
                "capabilities": {k: list(caps) for k in ("bounding", "effective", "permitted")},
                "noNewPrivileges": False,
            },
            "root": {"path": str(rootfs), "readonly": False},
            "hostname": hostname,
            "mounts": _default_mounts() + _bundle_mounts(extra_mounts),
            "linux": {
                "namespaces": namespaces,
                **({"sysctl": dict(sysctl)} if sysctl else {}),
                "resources": {
                    "devices": [{"allow": False, "access": "rwm"}],
                    **({"pids": {"limit": self.pids_limit}} if self.pids_limit > 0 else {}),
                },
                **({"seccomp": seccomp_profile(caps)} if self.seccomp else {}),
                "maskedPaths": MASKED_PATHS,
                "readonlyPaths": READONLY_PATHS,
            },
        }
        if self.nofile is not None:  # what nyxd was started with, not what it raised
            soft, hard = self.nofile
            config["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": soft, "hard": hard}]
        if container_id is not None:
            config["linux"]["cgroupsPath"] = f"{self.cgroup_parent}/{container_id}"
        Path(bundle).mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(bundle, 0o700)
        _write_private(Path(bundle) / "config.json", json.dumps(config, indent=1))


def _write_private(path: Path, text: str) -> None:
    """Write ``path`` atomically, mode 0600 (a bundle's config holds the environment)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _default_mounts() -> list[dict[str, Any]]:
    return [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
        },
    ]
