"""Mounts with real runc: named volumes (copy-up, data outliving containers and nyxd), a
read-only bind, tmpfs, files (secrets), cap_drop, stop_signal and init.

A supervisor with a network backend that sets nothing up (the container keeps ``lo`` in a
netns nyx made) and real runc, rootfs and image store, everything under a throwaway dir.
"""

from __future__ import annotations

import base64
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_runtime import _NoNetwork, as_nobody

from nyx_cli.daemon._host import Host
from nyx_cli.daemon._models import ContainerSpec, FileMount, Mount
from nyx_cli.daemon._netns import create_netns, delete_netns, is_mountpoint
from nyx_cli.daemon._settings import DaemonSettings
from nyx_cli.daemon._supervisor import Supervisor
from nyx_cli.errors import ConflictError
from nyx_cli.images._store import ImageStore
from nyx_cli.runtime import Rootfs, RuncRuntime, process_from_image
from nyx_cli.runtime._runc import become_subreaper
from nyx_core import NetworkBackend, make_plugin_manager
from nyx_core.errors import ConfigError

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_kernel")]

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "examples"))
import busybox_image as bi  # noqa: E402

SEED = b"seeded by the image\n"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dir with ``bb.tar`` (busybox:nyx) and ``db.tar`` (db:1: busybox plus ``/var/lib/db``
    owned 33:33 mode 0750 holding a file, a subdir and a symlink out of the image)."""
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed")
    out = tmp_path_factory.mktemp("vol-images")
    base = bi.layer_tar(bi.busybox_entries())
    extra = bi.layer_tar(
        [
            bi.Entry("var/lib", "dir", mode=0o755),
            bi.Entry("var/lib/db", "dir", mode=0o750, uid=33, gid=33),
            bi.Entry("var/lib/db/seed.txt", data=SEED, mode=0o640, uid=33, gid=33),
            bi.Entry("var/lib/db/sub", "dir", mode=0o700, uid=33, gid=33),
            bi.Entry("var/lib/db/sub/deep", data=b"deep\n", mode=0o600, uid=33, gid=33),
            bi.Entry("var/lib/db/passwd", "symlink", target="/etc/passwd"),
            bi.Entry("etc/hostsalias", "symlink", target="/etc/hosts"),
        ]
    )
    import hashlib

    ids = [f"sha256:{hashlib.sha256(layer).hexdigest()}" for layer in (base, extra)]
    bi.write_docker_archive(out / "bb.tar", [base], bi.image_config(ids[:1]), ["busybox:nyx"])
    config = bi.image_config(ids, extra={"StopSignal": "SIGUSR2"})
    bi.write_docker_archive(out / "db.tar", [base, extra], config, ["db:1"])
    return out


@pytest.fixture
def env(images: Path) -> Iterator[dict[str, Any]]:
    top = Path(tempfile.mkdtemp(prefix="nyxt-vol-"))
    top.chmod(0o755)  # every user can traverse it, as /var/lib and /run
    settings = DaemonSettings(
        state_dir=top / "state",
        run_dir=top / "run",
        socket=top / "run" / "nyxd.sock",
        container_subnet="10.231.0.0/24",
        gateway_ip="10.231.0.1",
        dns="off",
    )
    store = ImageStore(top / "state" / "images")
    store.load(images / "bb.tar")
    store.load(images / "db.tar")
    runtime = RuncRuntime(top / "run" / "runc", cgroup_parent=f"/nyxt-{os.getpid()}")
    become_subreaper()
    made: list[Supervisor] = []

    def supervisor() -> Supervisor:
        pm = make_plugin_manager()
        pm.register(_NoNetwork())
        host = Host(
            images=store,
            rootfs=Rootfs(),
            runtime=runtime,
            process_from_image=process_from_image,
            create_netns=create_netns,
            delete_netns=delete_netns,
            netns_alive=is_mountpoint,
        )
        sup = Supervisor(settings, NetworkBackend(pm, "none"), None, host, stop_grace=1)
        made.append(sup)
        return sup

    try:
        yield {"top": top, "supervisor": supervisor, "runtime": runtime}
    finally:
        for sup in made:
            sup.shutdown(grace=1)
        for item in runtime.list():
            runtime.delete(item["id"], force=True)
        runtime.remove_cgroup_parent()
        become_subreaper(False)
        subprocess.run(["umount", "-R", "-l", str(top / "run")], capture_output=True)
        shutil.rmtree(top, ignore_errors=True)


def run(sup: Supervisor, script: str, **kw: Any) -> tuple[int | None, str]:
    """Run ``sh -c script`` to its end: (exit code, output)."""
    c = sup.create(
        ContainerSpec(image=kw.pop("image", "busybox:nyx"), command=["sh", "-c", script], **kw)
    )
    result = sup.wait(c["id"], timeout=60)
    return result["exit_code"], b"".join(sup.logs(c["id"])).decode()


def test_named_volume_is_copied_up_once_and_outlives_containers_and_nyxd(
    env: dict[str, Any],
) -> None:
    sup = env["supervisor"]()
    vol = [Mount(type="volume", source="pgdata", target="/var/lib/db")]
    code, out = run(
        sup,
        "cat /var/lib/db/seed.txt; stat -c '%u:%g %a' /var/lib/db; readlink /var/lib/db/passwd;"
        " echo written > /var/lib/db/new; rm /var/lib/db/seed.txt",
        image="db:1",
        name="one",
        user="www-data",
        mounts=vol,
    )
    assert code == 0, out
    assert out.splitlines() == [SEED.decode().strip(), "33:33 750", "/etc/passwd"]
    data = env["top"] / "state" / "volumes" / "pgdata" / "_data"
    st = data.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (33, 33, 0o750)
    deep = (data / "sub" / "deep").stat()
    assert (deep.st_uid, stat.S_IMODE(deep.st_mode)) == (33, 0o600)
    assert os.readlink(data / "passwd") == "/etc/passwd"  # copied as a link, not followed

    # the container goes; the volume and its data stay
    sup.remove("one")
    assert [v["name"] for v in sup.list_volumes()] == ["pgdata"]

    # a new nyxd (the same state dir) finds it; a non-empty volume is not copied up again
    sup.shutdown(grace=1)
    sup2 = env["supervisor"]()
    assert sup2.get_volume("pgdata")["containers"] == []
    code, out = run(
        sup2, "ls /var/lib/db; cat /var/lib/db/new", image="db:1", name="two", mounts=vol
    )
    assert code == 0, out
    assert "seed.txt" not in out.split() and "written" in out.split()

    # in use (by an exited container) it stays; with the container gone it goes
    with pytest.raises(ConflictError, match="in use by container.*two"):
        sup2.remove_volume("pgdata")
    sup2.remove("two")
    sup2.remove_volume("pgdata")
    assert not (env["top"] / "state" / "volumes" / "pgdata").exists()


def test_volume_data_is_private_on_the_host(env: dict[str, Any]) -> None:
    sup = env["supervisor"]()
    code, out = run(
        sup,
        "echo top-secret > /data/f; id -u",
        mounts=[Mount(type="volume", source="priv", target="/data")],
    )
    assert code == 0, out
    vols = env["top"] / "state" / "volumes"
    assert stat.S_IMODE(vols.stat().st_mode) == 0o700
    assert stat.S_IMODE((vols / "priv").stat().st_mode) == 0o700
    assert as_nobody(vols / "priv" / "_data" / "f") == ["PermissionError"]


def test_anonymous_volume_goes_with_its_container(env: dict[str, Any]) -> None:
    sup = env["supervisor"]()
    code, out = run(
        sup,
        "cat /var/lib/db/seed.txt",
        image="db:1",
        name="anon",
        mounts=[Mount(type="volume", target="/var/lib/db")],
    )
    assert code == 0 and out == SEED.decode(), out
    (vol,) = sup.list_volumes()
    assert vol["containers"] == ["anon"] and len(vol["name"]) == 64
    sup.remove("anon")
    assert sup.list_volumes() == []


def test_readonly_bind_refuses_writes_and_a_writable_one_writes_to_the_host(
    env: dict[str, Any], tmp_path: Path
) -> None:
    host_dir = tmp_path / "share"
    host_dir.mkdir()
    (host_dir / "in.txt").write_text("from the host\n")
    sup = env["supervisor"]()
    code, out = run(
        sup,
        "cat /ro/in.txt; echo x > /ro/out.txt || echo refused; echo y > /rw/out.txt",
        mounts=[
            Mount(type="bind", source=str(host_dir), target="/ro", readonly=True),
            Mount(type="bind", source=str(host_dir), target="/rw"),
        ],
    )
    assert code == 0, out
    assert "from the host" in out and "Read-only file system" in out and "refused" in out
    assert (host_dir / "out.txt").read_text() == "y\n"


def test_bind_sources_are_checked_on_the_host(env: dict[str, Any], tmp_path: Path) -> None:
    sup = env["supervisor"]()
    with pytest.raises(
        ConfigError, match=r"mounts\[0\]\.source '/nonexistent-nyx': does not exist"
    ):
        sup.create(
            ContainerSpec(
                image="busybox:nyx",
                mounts=[Mount(type="bind", source="/nonexistent-nyx", target="/x")],
            )
        )
    state = str(env["top"] / "state" / "containers")
    with pytest.raises(ConfigError, match="inside nyxd's own directory"):
        sup.create(
            ContainerSpec(
                image="busybox:nyx", mounts=[Mount(type="bind", source=state, target="/x")]
            )
        )
    link = tmp_path / "sneaky"
    link.symlink_to(env["top"] / "run")  # through a symlink too
    with pytest.raises(ConfigError, match="inside nyxd's own directory"):
        sup.create(
            ContainerSpec(
                image="busybox:nyx", mounts=[Mount(type="bind", source=str(link), target="/x")]
            )
        )
    assert sup.list_containers(all=True) == []


def test_a_target_that_is_nyxs_own_file_through_an_image_symlink_is_refused(
    env: dict[str, Any], tmp_path: Path
) -> None:
    sup = env["supervisor"]()
    with pytest.raises(ConfigError, match=r"mounts\[0\]\.target '/etc/hostsalias': is /etc/hosts"):
        sup.create(
            ContainerSpec(
                image="db:1",
                command=["true"],
                mounts=[Mount(type="bind", source=str(tmp_path), target="/etc/hostsalias")],
            )
        )


def test_tmpfs_is_a_sized_noexec_tmpfs(env: dict[str, Any]) -> None:
    sup = env["supervisor"]()
    _, out = run(
        sup,
        "grep ' /scratch ' /proc/mounts; stat -c %a /scratch;"
        " dd if=/dev/zero of=/scratch/big bs=1k count=2048 2>&1 | grep -o 'No space left';"
        " cp /bin/busybox /scratch/bb 2>/dev/null; /scratch/bb true 2>&1 || echo noexec",
        mounts=[Mount(type="tmpfs", target="/scratch", tmpfs_size=1 << 20, tmpfs_mode=0o1770)],
    )
    lines = out.splitlines()
    assert lines[0].startswith("tmpfs /scratch tmpfs"), out
    assert "size=1024k" in lines[0] and "noexec" in lines[0] and "nosuid" in lines[0]
    assert lines[1] == "1770"
    assert "No space left" in out
    assert lines[-1] == "noexec"


def test_files_are_readable_inside_and_private_on_the_host(env: dict[str, Any]) -> None:
    sup = env["supervisor"]()
    secret = FileMount(
        name="db_password",
        target="/run/secrets/db_password",
        data=base64.b64encode(b"hunter2\n").decode(),
    )
    c = sup.create(
        ContainerSpec(
            image="busybox:nyx",
            user="nobody",
            command=[
                "sh",
                "-c",
                "cat /run/secrets/db_password; stat -c '%a %u' /run/secrets/db_password;"
                " echo x > /run/secrets/db_password || echo refused; sleep 300",
            ],
            files=[secret],
        )
    )
    try:
        log = env["top"] / "state" / "containers" / c["id"] / "container.log"
        for _ in range(600):
            if b"refused" in log.read_bytes():
                break
            env["runtime"].wait(c["id"], c["pid"], timeout=0.1)
        lines = log.read_text().splitlines()
        assert lines[0] == "hunter2" and lines[1] == "444 0" and lines[-1] == "refused"
        copy = env["top"] / "run" / "containers" / c["id"] / "files" / "0"
        assert copy.read_bytes() == b"hunter2\n"
        assert as_nobody(copy) == ["PermissionError"]
    finally:
        sup.stop(c["id"], timeout=0)


def test_cap_drop_net_raw_makes_ping_fail_and_cap_add_shows(env: dict[str, Any]) -> None:
    sup = env["supervisor"]()
    script = "ping -c1 -W1 127.0.0.1 2>&1; grep CapEff /proc/self/status"
    _, default = run(sup, script)
    _, dropped = run(sup, script, cap_drop=["NET_RAW"])
    _, added = run(sup, script, cap_add=["net_admin"])
    assert "permission denied" not in default.lower()
    assert "permission denied" in dropped.lower()
    eff = {
        name: int(out.split("CapEff:")[1].split()[0], 16)
        for name, out in [("default", default), ("dropped", dropped), ("added", added)]
    }
    net_raw, net_admin = 1 << 13, 1 << 12
    assert eff["default"] & net_raw and not eff["dropped"] & net_raw
    assert eff["added"] & net_admin and not eff["default"] & net_admin


def test_stop_signal_of_the_spec_and_of_the_image_are_honoured(env: dict[str, Any]) -> None:
    sup = env["supervisor"]()
    script = (
        "trap 'echo got-usr1; exit 0' USR1; trap 'echo got-usr2; exit 0' USR2;"
        " trap 'echo got-term; exit 0' TERM; echo ready; while true; do sleep 0.1; done"
    )
    for image, signal_, expect in [
        ("busybox:nyx", "SIGUSR1", "got-usr1"),
        ("db:1", None, "got-usr2"),
    ]:
        c = sup.create(
            ContainerSpec(
                image=image, command=["sh", "-c", script], stop_signal=signal_, stop_timeout=30
            )
        )
        log = env["top"] / "state" / "containers" / c["id"] / "container.log"
        for _ in range(600):
            if b"ready" in log.read_bytes():
                break
            env["runtime"].wait(c["id"], c["pid"], timeout=0.1)
        stopped = sup.stop(c["id"])
        assert stopped["exit_code"] == 0, log.read_text()
        assert expect in log.read_text()


def test_init_runs_as_pid_1_and_passes_the_exit_code(env: dict[str, Any]) -> None:
    sup = env["supervisor"]()
    if not any(os.path.exists(p) for p in ("/usr/bin/tini-static", "/usr/bin/catatonit")):
        pytest.skip("no static init installed (apt-get install tini)")
    code, out = run(sup, "tr '\\0' ' ' < /proc/1/cmdline; echo; exit 3", init=True)
    assert code == 3
    assert out.startswith("/dev/init -- sh -c"), out
    code, out = run(sup, "tr '\\0' ' ' < /proc/1/cmdline; echo")
    assert out.startswith("sh -c"), out
