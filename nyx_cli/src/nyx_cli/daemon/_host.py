"""What the supervisor does to the host besides networking: images, rootfs, runc, netns.

The supervisor only sees these protocols; :meth:`Host.default` wires nyx_core's runtime
modules (imported on use), and unit tests pass fakes.
"""

from __future__ import annotations

import builtins
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ._exits import ExitWatcher
from ._settings import DaemonSettings

__all__ = ["Host", "ImageStoreLike", "RootfsLike", "RuntimeLike"]


class ImageStoreLike(Protocol):
    def get(self, ref: str) -> Any: ...
    def list(self) -> Sequence[Any]: ...
    def load(self, path: Path) -> builtins.list[Any]: ...
    def import_oci_layout(self, layout: Path, reference: str) -> Any: ...
    def remove(self, ref: str) -> Any: ...
    def layer_dirs(self, image: Any) -> builtins.list[Path]: ...


class RootfsLike(Protocol):
    def mount(self, layer_dirs: Sequence[Path], container_dir: Path) -> Path: ...
    def unmount(self, container_dir: Path) -> Any: ...


class RuntimeLike(Protocol):
    def write_bundle(
        self,
        bundle: Path,
        *,
        rootfs: Path,
        process: Any,
        hostname: str,
        netns_path: str | None,
        mounts: Sequence[Any],
        host_network: bool = ...,
        sysctl: Mapping[str, str] | None = ...,
        capabilities: Sequence[str] | None = ...,
        init: Path | None = ...,
    ) -> Any: ...
    def start(self, container_id: str, bundle: Path, log_path: Path) -> int: ...
    def wait(self, container_id: str, pid: int, timeout: float | None) -> int | None: ...
    def kill(self, container_id: str, sig: int) -> Any: ...
    def exec(
        self, container_id: str, args: Sequence[str], timeout: float
    ) -> tuple[int | None, str]: ...
    def state(self, container_id: str) -> Any: ...
    def delete(self, container_id: str, force: bool) -> Any: ...
    def list(self) -> Sequence[Any]: ...


@dataclass
class Host:
    """What the supervisor does to the host besides networking: images, rootfs, runc, netns.

    :meth:`default` builds it from nyx_core's runtime modules; unit tests pass fakes.
    """

    images: ImageStoreLike
    rootfs: RootfsLike
    runtime: RuntimeLike
    process_from_image: Callable[..., Any]
    create_netns: Callable[[Path], Any]
    delete_netns: Callable[[Path], Any]
    extra: dict[str, Any] = field(default_factory=dict)
    #: signal a container's init directly instead of with ``runc kill`` (saves an exec):
    #: through the runtime's ``send_signal`` (a pidfd) when it has one, else kill(2), only
    #: sound when nyxd is the reaper, so the pid cannot be reused before it is reaped
    signal_direct: bool = False
    #: is the netns still a namespace bind-mounted at this path (in nyxd's mount
    #: namespace)? An empty file left by a crash or a reboot is not
    netns_alive: Callable[[Path], bool] = lambda path: True
    #: bring ``lo`` up in a netns (``network_mode: none``: no driver does it)
    loopback_up: Callable[[Path], Any] = lambda path: None
    #: write ``net.*`` sysctls inside a container's netns
    set_sysctls: Callable[[Path, Mapping[str, str]], Any] = lambda path, values: None
    #: ``watch_exit(pid, name, on_exit, pidfd)``: run ``on_exit`` in a thread named ``name``
    #: once process ``pid`` has ended (``pidfd``: the runtime's descriptor of it, or None),
    #: one thread watching them all (:mod:`._exits`); None: a thread per container blocks
    #: in ``runtime.wait`` from the start
    watch_exit: Callable[[int, str, Callable[[], None], int | None], Any] | None = None

    @classmethod
    def default(cls, settings: DaemonSettings) -> Host:
        images_mod: Any = importlib.import_module("nyx_cli.images")
        runtime_mod: Any = importlib.import_module("nyx_cli.runtime")
        runc_mod: Any = importlib.import_module("nyx_cli.runtime._runc")
        netns_mod: Any = importlib.import_module("nyx_cli.daemon._netns")
        from ._boot import inherited_nofile

        rootfs_cls = runtime_mod.Rootfs
        try:
            rootfs = rootfs_cls()
        except TypeError:
            rootfs = rootfs_cls
        return cls(
            images=images_mod.ImageStore(
                settings.state_dir / "images", images_mod.ImageLimits.from_settings(settings)
            ),
            rootfs=rootfs,
            runtime=runtime_mod.RuncRuntime(
                settings.run_dir / "runc",
                runc=settings.runtime,
                pids_limit=settings.pids_limit,
                fork_server=True,  # monitors forked by one server: no interpreter per container
                nofile=inherited_nofile(),  # not the limit nyxd raised for itself
            ),
            process_from_image=runtime_mod.process_from_image,
            create_netns=netns_mod.create_netns,
            delete_netns=netns_mod.delete_netns,
            extra={"become_subreaper": getattr(runc_mod, "become_subreaper", None)},
            signal_direct=True,
            netns_alive=netns_mod.is_netns,
            loopback_up=netns_mod.loopback_up,
            set_sysctls=netns_mod.set_sysctls,
            watch_exit=ExitWatcher().watch,
        )
