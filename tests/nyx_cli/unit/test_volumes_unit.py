"""Volumes and mounts without root: the volume store, copy-up, the in-rootfs resolver, the
spec's validation, the supervisor (fake host) and the /v1/volumes routes."""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
from pathlib import Path
from typing import Any

import pytest
import test_supervisor as ts
from test_supervisor import Calls, make_sup, spec

from nyx_cli.client._http import ApiError, Client
from nyx_cli.daemon._api import ApiServer
from nyx_cli.daemon._models import ContainerSpec, Mount
from nyx_cli.daemon._mounts import prepare
from nyx_cli.daemon._supervisor import Supervisor
from nyx_cli.daemon._volumes import ANONYMOUS_LABEL, VolumeStore
from nyx_cli.errors import ConflictError, NotFoundError
from nyx_cli.runtime import ProcessSpec, RuncRuntime
from nyx_cli.runtime._bundle import BundleMount
from nyx_cli.runtime._copyup import copy_up
from nyx_cli.runtime._inroot import resolve_in_root
from nyx_cli.runtime._seccomp import DEFAULT_CAPABILITIES, capability_set
from nyx_core.errors import ConfigError

calls, parts, sup = ts.calls, ts.parts, ts.sup


# ------------------------------------------------------------------ the store


def test_store_creates_lists_and_removes_privately(tmp_path: Path) -> None:
    store = VolumeStore(tmp_path / "volumes")
    rec = store.create("db", {"team": "a"})
    assert rec.name == "db" and rec.labels == {"team": "a"}
    assert stat.S_IMODE((tmp_path / "volumes").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "volumes" / "db").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "volumes" / "db" / "volume.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(store.data_dir("db").stat().st_mode) == 0o755
    with pytest.raises(ConflictError, match="'db' already exists"):
        store.create("db")
    anon = store.create()
    assert len(anon.name) == 64
    # another store on the same dir (a restarted nyxd) sees the same volumes
    again = VolumeStore(tmp_path / "volumes")
    assert sorted(v.name for v in again.list()) == sorted(["db", anon.name])
    assert again.get("db").labels == {"team": "a"}
    (store.data_dir("db") / "f").write_text("x")
    again.remove("db")
    assert not (tmp_path / "volumes" / "db").exists()
    with pytest.raises(NotFoundError, match="no such volume: db"):
        again.get("db")
    assert [p.name for p in (tmp_path / "volumes").iterdir()] == [anon.name]


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "-x", "x" * 129, "a b", "_data/../x"])
def test_bad_volume_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="volume name"):
        VolumeStore(tmp_path).create(name)
    assert [p for p in tmp_path.iterdir()] == []


def test_other_drivers_and_options_are_refused(tmp_path: Path) -> None:
    store = VolumeStore(tmp_path)
    with pytest.raises(ConfigError, match="driver 'nfs'"):
        store.create("a", driver="nfs")
    with pytest.raises(ConfigError, match="takes no options"):
        store.create("a", options={"type": "tmpfs"})
    assert store.list() == []


def test_an_interrupted_removal_is_finished_when_the_store_opens(tmp_path: Path) -> None:
    (tmp_path / ".rm-db-1234" / "_data").mkdir(parents=True)
    VolumeStore(tmp_path)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ resolving in the rootfs


def test_resolve_in_root_follows_the_images_links_inside_it(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "private" / "etc").mkdir(parents=True)
    (root / "etc").symlink_to("/private/etc")
    (root / "up").symlink_to("../../../..")
    (root / "rel").symlink_to("private")
    assert resolve_in_root(root, "/etc/hosts") == "/private/etc/hosts"
    assert resolve_in_root(root, "/up/etc/x") == "/private/etc/x"
    assert resolve_in_root(root, "/rel/etc/a/b") == "/private/etc/a/b"
    assert resolve_in_root(root, "/new/dir") == "/new/dir"
    (root / "loop").symlink_to("loop")
    with pytest.raises(OSError):
        resolve_in_root(root, "/loop/x")


# ------------------------------------------------------------------ copy-up


def _image(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    data = root / "var" / "lib" / "db"
    (data / "sub").mkdir(parents=True)
    (data / "f").write_text("seed\n")
    (data / "sub" / "g").write_text("deep\n")
    os.chmod(data / "f", 0o640)
    os.chmod(data, 0o750)
    (data / "out").symlink_to("/etc/shadow")
    os.mkfifo(data / "fifo")
    (root / "etc").mkdir()
    (root / "link").symlink_to("/var/lib/db")
    return root


def test_copy_up_copies_content_modes_and_links_without_following(tmp_path: Path) -> None:
    root = _image(tmp_path)
    dest = tmp_path / "vol"
    dest.mkdir()
    assert copy_up(root, "/link", dest)  # the image's symlink, resolved inside it
    assert (dest / "f").read_text() == "seed\n"
    assert (dest / "sub" / "g").read_text() == "deep\n"
    assert stat.S_IMODE((dest / "f").stat().st_mode) == 0o640
    assert stat.S_IMODE(dest.stat().st_mode) == 0o750  # the root takes the image dir's mode
    assert os.readlink(dest / "out") == "/etc/shadow"
    assert stat.S_ISFIFO((dest / "fifo").lstat().st_mode)
    # a volume that holds anything is never copied into again
    (dest / "f").unlink()
    assert not copy_up(root, "/var/lib/db", dest)
    assert not (dest / "f").exists()


def test_copy_up_of_nothing_or_a_file(tmp_path: Path) -> None:
    root = _image(tmp_path)
    dest = tmp_path / "vol"
    dest.mkdir()
    assert not copy_up(root, "/not/there", dest)
    with pytest.raises(ConfigError, match="'/var/lib/db/f' is not a regular file|is not a dir"):
        copy_up(root, "/var/lib/db/f", dest)
    assert list(dest.iterdir()) == []


def test_copy_up_never_writes_through_a_link_planted_in_the_volume(tmp_path: Path) -> None:
    root = _image(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "vol"
    dest.mkdir()
    # what another container on the same volume could plant between the check and the copy
    from nyx_cli.runtime import _copyup

    src = os.open(root / "var" / "lib" / "db", os.O_RDONLY | os.O_DIRECTORY)
    dst = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    (dest / "sub").symlink_to(outside)
    (dest / "f").symlink_to(outside / "f")
    try:
        _copyup._copy_dir(src, dst, 0)
    finally:
        os.close(src)
        os.close(dst)
    assert list(outside.iterdir()) == []


# ------------------------------------------------------------------ the spec


@pytest.mark.parametrize(
    ("mount", "fragment"),
    [
        ({"type": "bind", "source": "data", "target": "/x"}, "source 'data': a bind source"),
        ({"type": "bind", "source": "/a/../b", "target": "/x"}, "'..' is not allowed"),
        ({"type": "bind", "target": "/x"}, "needs a host path"),
        ({"type": "volume", "source": "/srv", "target": "/x"}, "not a volume name"),
        ({"type": "volume", "source": "db", "target": "x"}, "target 'x': must be an absolute"),
        (
            {"type": "volume", "source": "db", "target": "/"},
            "cannot mount over the container's root",
        ),
        ({"type": "volume", "source": "db", "target": "/a/../b"}, "'..' is not allowed"),
        ({"type": "tmpfs", "target": "/proc/sys"}, "inside /proc"),
        ({"type": "bind", "source": "/x", "target": "/etc/resolv.conf"}, "nyx manages this file"),
        ({"type": "tmpfs", "target": "//etc/./hosts"}, "nyx manages this file"),
        ({"type": "tmpfs", "source": "x", "target": "/t"}, "a tmpfs mount has no source"),
        ({"type": "bind", "source": "/x", "target": "/t", "nocopy": True}, "nocopy"),
        ({"type": "volume", "target": "/t", "tmpfs_size": 10}, "tmpfs_size"),
        ({"type": "nfs", "target": "/t"}, "type"),
    ],
)
def test_bad_mounts_are_refused_naming_the_value(mount: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match="mounts") as info:
        ContainerSpec.model_validate({"image": "x", "mounts": [mount]}, strict=True)
    assert fragment in str(info.value)


def test_one_mount_per_target_and_bad_files() -> None:
    with pytest.raises(ValueError, match=r"files\[0\]: target '/a' is also the target of mounts"):
        ContainerSpec(
            image="x",
            mounts=[Mount(type="tmpfs", target="/a")],
            files=[{"name": "s", "target": "/a/", "data": ""}],  # type: ignore[list-item]
        )
    with pytest.raises(ValueError, match="data of 's': not base64"):
        ContainerSpec(image="x", files=[{"name": "s", "target": "/b", "data": "%%"}])  # type: ignore[list-item]


def test_capabilities_and_signals_are_checked() -> None:
    s = ContainerSpec(image="x", cap_add=["net_admin", "CAP_SYS_TIME"], cap_drop=["all"])
    assert s.cap_add == ["CAP_NET_ADMIN", "CAP_SYS_TIME"] and s.cap_drop == ["ALL"]
    with pytest.raises(ValueError, match="cap_add: unknown capability 'NET_MAGIC'"):
        ContainerSpec(image="x", cap_add=["NET_MAGIC"])
    for good in ("SIGQUIT", "quit", "3", "SIGRTMIN+2", "SIGKILL"):
        ContainerSpec(image="x", stop_signal=good)
    for bad in ("SIGFOO", "0", "99", "SIGSTOP", ""):
        with pytest.raises(ValueError, match="stop_signal"):
            ContainerSpec(image="x", stop_signal=bad)
    with pytest.raises(ValueError, match="stop_timeout"):
        ContainerSpec(image="x", stop_timeout=-1)


def test_capability_set_follows_dockers_rules() -> None:
    base = list(DEFAULT_CAPABILITIES)
    assert capability_set() == base
    assert "CAP_NET_RAW" not in capability_set(drop=["NET_RAW"])
    assert capability_set(add=["NET_ADMIN"])[-1] == "CAP_NET_ADMIN"
    assert capability_set(add=["CHOWN"], drop=["ALL"]) == ["CAP_CHOWN"]
    everything = capability_set(add=["ALL"], drop=["SYS_ADMIN"])
    assert "CAP_SYS_ADMIN" not in everything and "CAP_SYS_MODULE" in everything
    assert "CAP_NET_RAW" in capability_set(add=["NET_RAW"], drop=["NET_RAW"])  # add wins


def test_the_bundle_gets_the_capabilities_and_their_seccomp_calls(tmp_path: Path) -> None:
    rt = RuncRuntime(tmp_path / "runc")
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)

    def bundle(**kw: Any) -> dict[str, Any]:
        rt.write_bundle(
            tmp_path / "b",
            rootfs=root,
            process=ProcessSpec(args=["sh"]),
            hostname="h",
            netns_path=None,
            mounts=[],
            **kw,
        )
        return dict(json.loads((tmp_path / "b" / "config.json").read_text()))

    def allowed(config: dict[str, Any]) -> set[str]:
        rules = config["linux"]["seccomp"]["syscalls"]
        return {
            n
            for r in rules
            if r["action"] == "SCMP_ACT_ALLOW" and not r.get("args")
            for n in r["names"]
        }

    default = bundle()
    assert "mount" not in allowed(default)
    admin = bundle(capabilities=capability_set(add=["SYS_ADMIN"]))
    assert "CAP_SYS_ADMIN" in admin["process"]["capabilities"]["bounding"]
    assert {"mount", "umount2", "setns"} <= allowed(admin)
    no_raw = bundle(capabilities=capability_set(drop=["NET_RAW"]))
    assert "CAP_NET_RAW" not in no_raw["process"]["capabilities"]["effective"]
    with pytest.raises(ConfigError, match="unknown capability"):
        bundle(capabilities=["CAP_NOPE"])


def test_bundle_mounts_go_parents_first_and_init_is_pid_1(tmp_path: Path) -> None:
    rt = RuncRuntime(tmp_path / "runc")
    root = tmp_path / "rootfs"
    root.mkdir()
    rt.write_bundle(
        tmp_path / "b",
        rootfs=root,
        process=ProcessSpec(args=["sh", "-c", "true"]),
        hostname="h",
        netns_path=None,
        mounts=[
            ("/run/x/hosts", "/etc/hosts", False),
            BundleMount("/etc", "/vol/etc", "bind", True),
            BundleMount("/scratch", "", "tmpfs", False, ("size=1024",)),
        ],
        init=Path("/usr/bin/tini-static"),
    )
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    extra = config["mounts"][7:]
    assert [m["destination"] for m in extra] == ["/etc", "/scratch", "/etc/hosts", "/dev/init"]
    assert extra[0]["options"] == ["rbind", "rprivate", "ro"]
    assert extra[1] == {
        "destination": "/scratch",
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["nosuid", "nodev", "noexec", "size=1024"],
    }
    assert extra[3]["source"] == "/usr/bin/tini-static" and "ro" in extra[3]["options"]
    assert config["process"]["args"] == ["/dev/init", "--", "sh", "-c", "true"]


# ------------------------------------------------------------------ host-side checks


def test_prepare_refuses_a_target_that_is_nyxs_file_through_a_link(
    sup: Supervisor, tmp_path: Path
) -> None:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "conf").symlink_to("/etc/resolv.conf")
    s = spec(mounts=[Mount(type="tmpfs", target="/conf")])
    with pytest.raises(ConfigError, match=r"mounts\[0\]\.target '/conf': is /etc/resolv.conf"):
        prepare(s, root, tmp_path / "c", sup.settings, sup.volumes)


def test_prepare_writes_files_privately(sup: Supervisor, tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    cdir = tmp_path / "c"
    cdir.mkdir()
    data = base64.b64encode(b"s3cret").decode()
    s = spec(files=[{"name": "pw", "target": "/run/secrets/pw", "data": data, "mode": 0o440}])
    (m,) = prepare(s, root, cdir, sup.settings, sup.volumes)
    assert m == BundleMount("/run/secrets/pw", str(cdir / "files" / "0"), "bind", True)
    assert (cdir / "files" / "0").read_bytes() == b"s3cret"
    assert stat.S_IMODE((cdir / "files").stat().st_mode) == 0o700
    assert stat.S_IMODE((cdir / "files" / "0").stat().st_mode) == 0o440


def test_bind_sources_must_exist_and_not_be_nyxs(sup: Supervisor, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist on the host"):
        sup.create(spec(mounts=[Mount(type="bind", source=str(tmp_path / "nope"), target="/x")]))
    for own in (sup.settings.state_dir / "volumes", sup.settings.run_dir):
        with pytest.raises(ConfigError, match="inside nyxd's own directory"):
            sup.create(spec(mounts=[Mount(type="bind", source=str(own), target="/x")]))
    assert sup.list_containers(all=True) == []


# ------------------------------------------------------------------ the supervisor


class _Rootfs(ts.FakeRootfs):
    """A fake rootfs that exists (the targets are resolved in it)."""

    def mount(self, layer_dirs: Any, container_dir: Path) -> Path:
        merged = Path(super().mount(layer_dirs, container_dir))
        merged.mkdir(parents=True, exist_ok=True)
        return merged


@pytest.fixture
def vsup(tmp_path: Path, parts: dict[str, Any], calls: Calls) -> Supervisor:
    parts["rootfs"] = _Rootfs(calls)
    s = make_sup(tmp_path, parts, calls)
    yield s
    s.shutdown(grace=0.5)


def test_a_volume_is_created_on_first_use_and_outlives_the_container(
    vsup: Supervisor, parts: dict[str, Any]
) -> None:
    c = vsup.create(spec(name="db", mounts=[Mount(type="volume", source="pg", target="/data")]))
    assert [(v["name"], v["containers"]) for v in vsup.list_volumes()] == [("pg", ["db"])]
    mounts = parts["runtime"].last["mounts"]
    assert BundleMount("/data", str(vsup.volumes.data_dir("pg")), "bind", False) in mounts
    with pytest.raises(ConflictError, match="'pg' is in use by container.*db"):
        vsup.remove_volume("pg")
    vsup.stop(c["id"])
    with pytest.raises(ConflictError, match="in use"):  # stopped still counts, as in docker
        vsup.remove_volume("pg")
    vsup.remove(c["id"])
    assert vsup.get_volume("pg")["containers"] == []
    vsup.remove_volume("pg")
    assert vsup.list_volumes() == []
    with pytest.raises(NotFoundError):
        vsup.remove_volume("pg")


def test_an_anonymous_volume_is_named_and_goes_with_its_container(vsup: Supervisor) -> None:
    c = vsup.create(spec(name="a", mounts=[Mount(type="volume", target="/data")]))
    (vol,) = vsup.list_volumes()
    assert vol["labels"] == {ANONYMOUS_LABEL: c["id"]} and vol["containers"] == ["a"]
    kept = vsup.create_volume("k" * 64)  # a 64-character name is not anonymous for that
    b = vsup.create(spec(name="b", mounts=[Mount(type="volume", source=kept["name"], target="/d")]))
    vsup.remove(c["id"], force=True)
    vsup.remove(b["id"], force=True)
    assert [v["name"] for v in vsup.list_volumes()] == [kept["name"]]


def test_a_failed_start_leaves_no_anonymous_volume(vsup: Supervisor, parts: dict[str, Any]) -> None:
    parts["runtime"].fail_start = "boom"
    with pytest.raises(Exception, match="boom"):
        vsup.create(spec(mounts=[Mount(type="volume", target="/data")]))
    assert vsup.list_volumes() == []


def test_caps_and_init_reach_the_runtime(vsup: Supervisor, parts: dict[str, Any]) -> None:
    vsup.create(spec(cap_drop=["NET_RAW"], cap_add=["NET_ADMIN"]))
    caps = parts["runtime"].last["capabilities"]
    assert "CAP_NET_RAW" not in caps and "CAP_NET_ADMIN" in caps and "CAP_CHOWN" in caps
    vsup.create(spec())
    assert "capabilities" not in parts["runtime"].last and "init" not in parts["runtime"].last
    init = vsup.settings.state_dir.parent / "tini"
    init.write_text("#!/bin/sh\n")
    init.chmod(0o755)
    vsup.settings = vsup.settings.model_copy(update={"init_path": init})
    vsup.create(spec(init=True))
    assert parts["runtime"].last["init"] == init
    vsup.settings = vsup.settings.model_copy(update={"init_path": None})
    import nyx_cli.runtime._runc as runc_mod

    old = runc_mod.INIT_PATHS
    runc_mod.INIT_PATHS = ()
    try:
        with pytest.raises(ConfigError, match="no init binary on nyxd's host; install tini"):
            vsup.create(spec(init=True, name="noinit"))
    finally:
        runc_mod.INIT_PATHS = old
    assert all(c["name"] != "noinit" for c in vsup.list_containers(all=True))


def test_stop_uses_the_specs_then_the_images_stop_signal(
    vsup: Supervisor, parts: dict[str, Any], calls: Calls
) -> None:
    a = vsup.create(spec(stop_signal="SIGQUIT"))
    parts["images"].images["busybox:nyx"].config["StopSignal"] = "SIGUSR1"
    b = vsup.create(spec())
    c = vsup.create(spec(stop_signal="9"))
    for cid in (a["id"], b["id"], c["id"]):
        vsup.stop(cid)
    kills = [(x[1], x[2]) for x in calls if x[0] == "kill"]
    assert (a["id"], signal.SIGQUIT) in kills
    assert (b["id"], signal.SIGUSR1) in kills
    assert (c["id"], signal.SIGKILL) in kills


def test_stop_timeout_of_the_spec_is_the_grace(
    vsup: Supervisor, parts: dict[str, Any], calls: Calls
) -> None:
    c = vsup.create(spec(stop_timeout=0))  # no grace: straight to SIGKILL
    parts["runtime"].ignore_term.add(c["id"])
    vsup.stop(c["id"])
    assert [x[2] for x in calls if x[0] == "kill"] == [signal.SIGKILL]


# ------------------------------------------------------------------ the API


@pytest.fixture
def vapi(vsup: Supervisor, tmp_path: Path) -> Client:
    server = ApiServer(tmp_path / "api.sock", vsup)  # type: ignore[arg-type]
    server.start()
    yield Client(tmp_path / "api.sock")
    server.close()


def test_volume_routes(vapi: Client) -> None:
    made = vapi.request("POST", "/v1/volumes", body={"name": "data", "labels": {"a": "b"}})
    assert made["name"] == "data" and made["driver"] == "local" and made["containers"] == []
    assert made["mountpoint"].endswith("/volumes/data/_data")
    with pytest.raises(ApiError) as info:
        vapi.request("POST", "/v1/volumes", body={"name": "data"})
    assert info.value.status == 409
    anon = vapi.request("POST", "/v1/volumes", body={})
    assert [v["name"] for v in vapi.request("GET", "/v1/volumes", params={"label": "a=b"})] == [
        "data"
    ]
    assert len(vapi.request("GET", "/v1/volumes")) == 2
    assert vapi.request("GET", "/v1/volumes/data")["labels"] == {"a": "b"}
    vapi.request(
        "POST",
        "/v1/containers",
        body={
            "image": "busybox:nyx",
            "name": "user",
            "mounts": [{"type": "volume", "source": "data", "target": "/d"}],
        },
    )
    with pytest.raises(ApiError) as info:
        vapi.request("DELETE", "/v1/volumes/data")
    assert info.value.status == 409 and "user" in str(info.value)
    vapi.request("DELETE", f"/v1/volumes/{anon['name']}")
    with pytest.raises(ApiError) as info:
        vapi.request("GET", f"/v1/volumes/{anon['name']}")
    assert info.value.status == 404


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"name": "../x"}, "name"),
        ({"name": "x", "driver": "nfs"}, "driver 'nfs'"),
        ({"name": "x", "options": {"o": "y"}}, "takes no options"),
        ({"name": "x", "labels": {"a": 1}}, "labels.a"),
        ({"name": "x", "bogus": 1}, "bogus"),
    ],
)
def test_bad_volume_requests_are_400(vapi: Client, body: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ApiError) as info:
        vapi.request("POST", "/v1/volumes", body=body)
    assert info.value.status == 400 and fragment in str(info.value)
    assert vapi.request("GET", "/v1/volumes") == []


def test_bad_mount_in_a_container_request_is_400_naming_it(vapi: Client) -> None:
    with pytest.raises(ApiError) as info:
        vapi.request(
            "POST",
            "/v1/containers",
            body={
                "image": "busybox:nyx",
                "mounts": [{"type": "bind", "source": "rel", "target": "/x"}],
            },
        )
    assert info.value.status == 400 and "mounts.0" in str(info.value) and "'rel'" in str(info.value)
    assert vapi.request("GET", "/v1/containers", params={"all": 1}) == []


def test_nyx_volume_commands(vapi: Client, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from nyx_cli.client._cli import cli

    sock = str(tmp_path / "api.sock")

    def nyx(*args: str) -> Any:
        return CliRunner().invoke(cli, ["--socket", sock, *args])

    made = nyx("volume", "create", "--label", "team=db", "data")
    assert made.exit_code == 0 and made.output == "data\n"
    assert nyx("volume", "create", "data").exit_code == 125
    refused = nyx("volume", "create", "-o", "type=nfs", "x")
    assert refused.exit_code == 125 and "takes no options" in refused.output
    vapi.request("POST", "/v1/containers", body={
        "image": "busybox:nyx", "name": "user",
        "mounts": [{"type": "volume", "source": "data", "target": "/d"}]})  # fmt: skip
    listed = nyx("volume", "ls")
    assert listed.output.splitlines()[1].split() == ["local", "data", "user"]
    assert nyx("volume", "ls", "-q", "--filter", "label=team=db").output == "data\n"
    assert nyx("volume", "ls", "-q", "--filter", "label=team=web").output == ""
    (shown,) = json.loads(nyx("volume", "inspect", "data").output)
    assert shown["labels"] == {"team": "db"} and shown["containers"] == ["user"]
    busy = nyx("volume", "rm", "data")
    assert busy.exit_code == 125 and "in use by container(s) user" in busy.output
    vapi.request("DELETE", "/v1/containers/user", params={"force": 1})
    assert nyx("volume", "rm", "data").output == "data\n"
    assert nyx("volume", "inspect", "data").exit_code == 125
