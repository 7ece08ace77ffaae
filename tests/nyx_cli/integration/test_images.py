"""The image store with real archives: docker save, OCI layouts, whiteouts, digests, tags."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import nyx_cli.images._load as load_mod
from nyx_cli.errors import DigestMismatchError, ImageError, ImageNotFoundError
from nyx_cli.images import Image, ImageLimits, ImageStore
from nyx_cli.images._compression import zstd_available
from nyx_cli.images._unpack import _Unpacker
from nyx_cli.runtime import Rootfs
from nyx_core.errors import ConfigError, NyxError

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_kernel")]

ROOT = Path(__file__).resolve().parents[3]


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "busybox_image", ROOT / "examples/busybox_image.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["busybox_image"] = module
    spec.loader.exec_module(module)
    return module


bb = _example()
Entry = bb.Entry


def sha(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The busybox image as docker save tar, OCI tar and OCI dir (built by the example)."""
    out = tmp_path_factory.mktemp("archives")
    script = str(ROOT / "examples/busybox_image.py")
    subprocess.run([sys.executable, script, str(out / "docker.tar")], check=True)
    subprocess.run(
        [sys.executable, script, str(out / "oci.tar"), "--format", "oci", "--tag", "busybox:oci"],
        check=True,
    )
    subprocess.run([sys.executable, script, "--oci-dir", str(out / "oci-dir")], check=True)
    return {"docker": out / "docker.tar", "oci": out / "oci.tar", "dir": out / "oci-dir"}


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "images")


def assert_busybox(store: ImageStore, image: Image) -> None:
    assert image.id.startswith("sha256:") and len(image.id) == 71
    assert image.config["Cmd"] == ["sh"]
    assert len(image.layers) == 1
    (layer,) = store.layer_dirs(image)
    assert (layer / "bin" / "busybox").stat().st_mode & 0o111
    assert os.readlink(layer / "bin" / "sh") == "busybox"
    assert (layer / "www" / "index.html").read_text().startswith("<html>")
    assert stat.S_IMODE((layer / "tmp").stat().st_mode) == 0o1777
    assert image.size > 1_000_000


def test_load_docker_save_archive(store: ImageStore, archives: dict[str, Path]) -> None:
    (image,) = store.load(archives["docker"])
    assert image.repo_tags == ["busybox:nyx"]
    assert image.digest is None
    assert_busybox(store, image)
    assert store.list() == [image]


def test_load_oci_tar_and_dir_share_layers(store: ImageStore, archives: dict[str, Path]) -> None:
    (from_tar,) = store.load(archives["oci"])
    assert from_tar.repo_tags == ["busybox:oci"]
    assert from_tar.digest is not None and from_tar.digest.startswith("sha256:")
    assert_busybox(store, from_tar)
    (from_dir,) = store.load(archives["dir"])
    assert from_dir.id == from_tar.id
    assert set(from_dir.repo_tags) == {"busybox:oci", "busybox:nyx"}
    assert len(list((store.root / "layers").iterdir())) == 1
    (from_docker,) = store.load(archives["docker"])
    assert from_docker.id == from_tar.id and len(store.list()) == 1


def test_import_oci_layout_under_a_reference(store: ImageStore, archives: dict[str, Path]) -> None:
    image = store.import_oci_layout(archives["dir"], "docker.io/library/busybox:pulled")
    assert "docker.io/library/busybox:pulled" in image.repo_tags
    assert store.get("busybox:pulled").id == image.id
    assert store.get(f"busybox@{image.digest}").id == image.id


def _merged_layout(tmp_path: Path, images: dict[str, tuple[bytes, str]]) -> Path:
    """One OCI layout holding several images: {ref.name: (layer, architecture)}."""
    out = tmp_path / "merged"
    (out / "blobs" / "sha256").mkdir(parents=True)
    manifests = []
    for n, (name, (layer, arch)) in enumerate(images.items()):
        part = tmp_path / f"part{n}"
        config = bb.image_config([sha(layer)])
        config["architecture"] = arch
        bb.write_oci_layout(part, [layer], config, [name], as_dir=True)
        for blob in (part / "blobs" / "sha256").iterdir():
            shutil.copy(blob, out / "blobs" / "sha256" / blob.name)
        manifests += json.loads((part / "index.json").read_text())["manifests"]
    shutil.copy(tmp_path / "part0" / "oci-layout", out / "oci-layout")
    (out / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": manifests}))
    return out


def test_import_picks_the_named_manifest_and_records_digests(
    store: ImageStore, tmp_path: Path
) -> None:
    one = bb.layer_tar([Entry("one", data=b"1")])
    two = bb.layer_tar([Entry("two", data=b"2")])
    layout = _merged_layout(
        tmp_path,
        {
            "docker.io/library/app:1": (one, bb._arch()),
            "docker.io/library/app:2": (two, bb._arch()),
        },
    )
    image = store.import_oci_layout(layout, "app:2")
    assert image.repo_tags == ["docker.io/library/app:2"]
    assert (store.layer_dirs(image)[0] / "two").exists()
    assert store.get("app:2").id == image.id
    pinned = store.import_oci_layout(layout, f"app@{image.digest}")
    assert pinned.id == image.id
    assert pinned.repo_digests == [f"docker.io/library/app@{image.digest}"]
    assert store.get(f"docker.io/library/app@{image.digest}").id == image.id
    with pytest.raises(ImageError, match="no manifest is named"):
        store.import_oci_layout(layout, "app:3")


def test_load_skips_other_platforms(store: ImageStore, tmp_path: Path) -> None:
    mine = bb.layer_tar([Entry("mine", data=b"1")])
    other = bb.layer_tar([Entry("other", data=b"2")])
    layout = _merged_layout(tmp_path, {"x:mine": (mine, bb._arch()), "x:other": (other, "s390x")})
    images = store.load(layout)
    assert [i.repo_tags for i in images] == [["x:mine"]]


def test_get_normalisation_prefix_and_errors(store: ImageStore, archives: dict[str, Path]) -> None:
    (image,) = store.load(archives["docker"])
    for ref in ("busybox:nyx", "docker.io/library/busybox:nyx", "library/busybox:nyx", image.id):
        assert store.get(ref).id == image.id
    assert store.get(image.id[7:19]).id == image.id
    assert store.get(image.id[:12]).id == image.id
    with pytest.raises(ImageNotFoundError, match="'busybox'"):
        store.get("busybox")  # means busybox:latest
    store.tag(image.id, "busybox")
    assert store.get("busybox").repo_tags == ["busybox:nyx", "busybox:latest"]
    with pytest.raises(ImageNotFoundError) as info:
        store.get("nope:1")
    assert isinstance(info.value, NyxError)


def test_tag_moves_to_the_newer_image(
    store: ImageStore, archives: dict[str, Path], tmp_path: Path
) -> None:
    (first,) = store.load(archives["docker"])
    layer = bb.layer_tar([Entry("hello", data=b"hi\n")])
    bb.write_docker_archive(
        tmp_path / "o.tar", [layer], bb.image_config([sha(layer)]), ["busybox:nyx"]
    )
    (second,) = store.load(tmp_path / "o.tar")
    assert second.id != first.id
    assert store.get("busybox:nyx").id == second.id
    assert store.get(first.id).repo_tags == []


def test_remove_untags_then_deletes_and_collects(
    store: ImageStore, archives: dict[str, Path]
) -> None:
    (image,) = store.load(archives["oci"])
    store.tag(image.id, "other:1")
    store.remove("other:1")
    assert store.get(image.id).repo_tags == ["busybox:oci"]
    store.remove("busybox:oci")
    assert store.list() == []
    assert list((store.root / "layers").iterdir()) == []
    assert list((store.root / "blobs" / "sha256").iterdir()) == []
    with pytest.raises(ImageNotFoundError):
        store.remove("busybox:oci")


def test_not_an_image_is_rejected(store: ImageStore, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="neither"):
        store.load(tmp_path / "empty")
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(ImageError, match="junk.tar"):
        store.load(tmp_path / "junk.tar")
    with pytest.raises(ImageError, match="does not exist"):
        store.load(tmp_path / "missing.tar")


# -- digests -------------------------------------------------------------------------------


def _oci_dir(tmp_path: Path, layers: list[bytes], **kw: object) -> Path:
    out = tmp_path / "layout"
    bb.write_oci_layout(
        out, layers, bb.image_config([sha(x) for x in layers]), ["t:1"], as_dir=True, **kw
    )
    return out


def assert_store_empty(store: ImageStore) -> None:
    assert store.list() == []
    assert list((store.root / "layers").iterdir()) == []
    assert list((store.root / "tmp").iterdir()) == []


def test_corrupted_layer_blob_is_rejected(store: ImageStore, tmp_path: Path) -> None:
    layer = bb.layer_tar([Entry("f", data=b"x" * 1000)])
    layout = _oci_dir(tmp_path, [layer], compress=False)
    blob = layout / "blobs" / "sha256" / sha(layer).removeprefix("sha256:")
    blob.write_bytes(blob.read_bytes().replace(b"x" * 10, b"y" * 10, 1))
    with pytest.raises(DigestMismatchError, match="digest is sha256:") as info:
        store.load(layout)
    assert isinstance(info.value, ConfigError)  # the archive is bad, not the daemon
    assert_store_empty(store)


def test_wrong_diff_id_is_rejected(store: ImageStore, tmp_path: Path) -> None:
    layer = bb.layer_tar([Entry("f", data=b"data")])
    other = bb.layer_tar([Entry("g", data=b"data")])
    out = tmp_path / "layout"
    bb.write_oci_layout(out, [layer], bb.image_config([sha(other)]), ["t:1"], as_dir=True)
    with pytest.raises(DigestMismatchError, match="uncompressed digest"):
        store.load(out)
    assert_store_empty(store)


def test_docker_config_digest_mismatch_is_rejected(store: ImageStore, tmp_path: Path) -> None:
    layer = bb.layer_tar([Entry("f", data=b"data")])
    out = tmp_path / "extracted"
    bb.write_docker_archive(tmp_path / "d.tar", [layer], bb.image_config([sha(layer)]), ["t:1"])
    shutil.unpack_archive(tmp_path / "d.tar", out, format="tar")
    manifest = json.loads((out / "manifest.json").read_text())
    config = out / manifest[0]["Config"]
    config.write_text(config.read_text().replace('"sh"', '"ls"'))
    with pytest.raises(DigestMismatchError, match="config"):
        store.load(out)
    assert store.list() == []


def test_truncated_size_is_rejected(store: ImageStore, tmp_path: Path) -> None:
    layout = _oci_dir(tmp_path, [bb.layer_tar([Entry("f", data=b"z")])])
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0]["size"] += 1
    (layout / "index.json").write_text(json.dumps(index))
    with pytest.raises(DigestMismatchError, match="size"):
        store.load(layout)


# -- whiteouts and unpack safety -----------------------------------------------------------

LOWER = [
    Entry("a", "dir", mode=0o755),
    Entry("a/keep", data=b"keep\n"),
    Entry("a/gone", data=b"gone\n"),
    Entry("b", "dir", mode=0o750, uid=33, gid=33),
    Entry("b/old1", data=b"1"),
    Entry("b/sub", "dir"),
    Entry("b/sub/old2", data=b"2"),
    Entry("c", data=b"c\n"),
    Entry("d", "symlink", target="c"),
    Entry("suid", data=b"#!/bin/sh\n", mode=0o4755, uid=0, gid=0),
]
UPPER = [
    Entry("a/.wh.gone"),
    Entry("b/.wh..wh..opq"),
    Entry("b/new", data=b"new\n"),
    Entry(".wh.c"),
    Entry(".wh..wh.plnk", "dir"),
    Entry("e", data=b"e\n", uid=1000, gid=1001, xattrs={"user.nyx": "test"}),
    Entry("f", "hardlink", target="e"),
    Entry("fifo", "fifo", mode=0o600),
    Entry("g", data=b"g\n"),
    Entry(".wh.g"),  # hides lower layers only: this layer's g stays
]


@pytest.mark.parametrize("fmt", ["oci", "docker"])
def test_whiteouts_become_overlay_whiteouts(store: ImageStore, tmp_path: Path, fmt: str) -> None:
    layers = [bb.layer_tar(LOWER), bb.layer_tar(UPPER)]
    config = bb.image_config([sha(x) for x in layers])
    if fmt == "oci":
        bb.write_oci_layout(tmp_path / "img", layers, config, ["wh:1"], as_dir=True)
        (image,) = store.load(tmp_path / "img")
    else:
        bb.write_docker_archive(tmp_path / "img.tar", layers, config, ["wh:1"])
        (image,) = store.load(tmp_path / "img.tar")
    lower, upper = store.layer_dirs(image)
    for name in ("a/gone", "c"):
        st = os.lstat(upper / name)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert os.getxattr(upper / "b", "trusted.overlay.opaque") == b"y"
    assert not (upper / ".wh..wh.plnk").exists()
    assert not list(upper.rglob(".wh.*"))
    assert os.getxattr(upper / "e", "user.nyx") == b"test"
    assert (upper / "e").stat().st_uid == 1000 and (upper / "e").stat().st_gid == 1001
    assert (upper / "e").stat().st_ino == (upper / "f").stat().st_ino
    assert stat.S_ISFIFO(os.lstat(upper / "fifo").st_mode)
    assert (upper / "g").read_text() == "g\n"
    assert stat.S_IMODE((lower / "suid").stat().st_mode) == 0o4755
    assert (lower / "b").stat().st_uid == 33 and stat.S_IMODE((lower / "b").stat().st_mode) == 0o750

    container = tmp_path / "ctr"
    merged = Rootfs.mount(store.layer_dirs(image), container)
    try:
        found = sorted(str(p.relative_to(merged)) for p in merged.rglob("*"))
        assert found == ["a", "a/keep", "b", "b/new", "d", "e", "f", "fifo", "g", "suid"]
        assert os.readlink(merged / "d") == "c" and not (merged / "d").exists()
        (merged / "a" / "written").write_text("w")
    finally:
        Rootfs.unmount(container)
    Rootfs.unmount(container)  # idempotent
    assert (container / "upper" / "a" / "written").exists()
    assert not (lower / "a" / "written").exists()


def test_entry_escaping_the_root_is_rejected(store: ImageStore, tmp_path: Path) -> None:
    layout = _oci_dir(tmp_path, [bb.layer_tar([Entry("../escape", data=b"x")])])
    with pytest.raises(ImageError, match="escapes"):
        store.load(layout)
    assert not (tmp_path / "images" / "escape").exists()
    assert_store_empty(store)


def test_write_through_a_symlink_is_rejected(store: ImageStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    entries = [Entry("link", "symlink", target=str(outside)), Entry("link/pwned", data=b"x")]
    layout = _oci_dir(tmp_path, [bb.layer_tar(entries)])
    with pytest.raises(ImageError, match="symlink"):
        store.load(layout)
    assert list(outside.iterdir()) == []
    assert_store_empty(store)


# -- interoperability with skopeo (real-world layouts, zstd) -------------------------------


@pytest.fixture
def skopeo() -> Iterator[str]:
    path = shutil.which("skopeo")
    if path is None:
        pytest.skip("skopeo is not installed")
    yield path


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_skopeo_written_layout_loads(
    store: ImageStore, archives: dict[str, Path], tmp_path: Path, skopeo: str, compression: str
) -> None:
    if compression == "zstd" and not zstd_available():
        pytest.skip("zstandard is not installed")
    out = tmp_path / "sk"
    subprocess.run(
        [
            skopeo,
            "copy",
            "--quiet",
            "--dest-compress-format",
            compression,
            f"docker-archive:{archives['docker']}",
            f"oci:{out}:busybox:sk",
        ],
        check=True,
        capture_output=True,
    )
    (image,) = store.load(out)
    assert image.repo_tags == ["busybox:sk"]
    assert_busybox(store, image)
    inspected = subprocess.run(
        [skopeo, "inspect", "--config", f"docker-archive:{archives['docker']}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert json.loads(inspected)["config"]["Cmd"] == ["sh"]


def test_skopeo_archives_load(
    store: ImageStore, archives: dict[str, Path], tmp_path: Path, skopeo: str
) -> None:
    src = f"oci:{archives['dir']}:busybox:nyx"
    for dest in (
        f"docker-archive:{tmp_path}/d.tar:busybox:sk2",
        f"oci-archive:{tmp_path}/o.tar:busybox:sk3",
    ):
        subprocess.run([skopeo, "copy", "--quiet", src, dest], check=True, capture_output=True)
    (from_docker,) = store.load(tmp_path / "d.tar")  # its layer.tar is a symlink member
    assert from_docker.repo_tags == ["docker.io/library/busybox:sk2"]
    assert_busybox(store, from_docker)
    (from_oci,) = store.load(tmp_path / "o.tar")
    assert from_oci.id == from_docker.id
    assert store.get("busybox:sk3").id == store.get("busybox:sk2").id


def test_remove_keeps_layers_a_container_still_mounts(
    store: ImageStore, archives: dict[str, Path], tmp_path: Path
) -> None:
    (image,) = store.load(archives["docker"])
    (layer,) = store.layer_dirs(image)
    small = bb.layer_tar([Entry("x", data=b"x")])
    bb.write_docker_archive(tmp_path / "s.tar", [small], bb.image_config([sha(small)]), ["s:1"])
    store.load(tmp_path / "s.tar")
    (store.root / "tmp" / "blob-stale").write_bytes(b"half a blob")
    merged = Rootfs.mount([layer], tmp_path / "ctr")
    try:
        store.remove("busybox:nyx")
        assert (merged / "bin" / "busybox").exists()
        assert layer.is_dir()  # still a lowerdir of the container's overlay
    finally:
        Rootfs.unmount(tmp_path / "ctr")
    assert list((store.root / "tmp").iterdir()) == []
    store.remove("s:1")
    assert_store_empty(store)


# -- other users never reach image content -------------------------------------------------

NOBODY_PROBE = """
import os, sys
for path in sys.argv[1:]:
    try:
        os.stat(path)
        if os.path.isdir(path):
            os.listdir(path)
        else:
            open(path, "rb").close()
        print("reachable")
    except Exception as exc:
        print(type(exc).__name__)
"""


def as_nobody(*paths: Path) -> list[str]:
    """What uid/gid 65534 (no supplementary groups) gets when it stats and opens (or lists)
    each of ``paths``: ``reachable`` or the exception's name."""
    proc = subprocess.run(
        ["/usr/bin/python3", "-c", NOBODY_PROBE, *map(str, paths)],
        user=65534,
        group=65534,
        extra_groups=[],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    )
    return proc.stdout.split()


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user can traverse (pytest's tmp_path is 0700: it would hide all)."""
    path = Path(tempfile.mkdtemp(prefix="nyxt-open-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


SETUID_LAYER = [
    Entry("bin", "dir", mode=0o755),
    Entry("bin/su", data=b"#!/bin/sh\nid\n", mode=0o4755),
    Entry("bin/sg", data=b"#!/bin/sh\nid\n", mode=0o2755),
    Entry("bin/su2", "hardlink", target="bin/su"),
]


def test_setuid_files_are_never_reachable_by_other_users(
    open_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ImageStore(open_dir / "images")
    assert as_nobody(open_dir) == ["reachable"]  # the check itself can see what is open
    seen: dict[str, list[str]] = {}
    entry = _Unpacker.entry

    def spy(self: Any, tar: Any, info: Any) -> None:
        entry(self, tar, info)  # then, while the layer is still being unpacked:
        seen[info.name] = as_nobody(self.dest / info.name, self.dest)

    monkeypatch.setattr(_Unpacker, "entry", spy)
    (image,) = store.load(_oci_dir(tmp_path, [bb.layer_tar(SETUID_LAYER)]))
    assert set(seen) == {e.name for e in SETUID_LAYER}
    assert all(got == ["PermissionError", "PermissionError"] for got in seen.values()), seen
    (layer,) = store.layer_dirs(image)
    assert stat.S_IMODE((layer / "bin" / "su").stat().st_mode) == 0o4755  # kept for root
    blobs = list((store.root / "blobs" / "sha256").iterdir())
    paths = [layer / "bin" / "su", layer, *blobs, store.root / "index.json", store.root]
    assert as_nobody(*paths) == ["PermissionError"] * len(paths)
    for sub in ("", "blobs", "blobs/sha256", "layers", "tmp"):
        assert stat.S_IMODE((store.root / sub).stat().st_mode) == 0o700, sub
    for f in [*blobs, store.root / "index.json", store.root / "lock"]:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def test_crash_leftovers_in_tmp_are_removed_when_the_store_opens(open_dir: Path) -> None:
    root = open_dir / "images"  # as an older nyx left it: world-traversable
    stale = root / "tmp" / "layer-0123" / "bin"
    stale.mkdir(parents=True)
    for d in (root, root / "tmp", stale.parent, stale):
        d.chmod(0o755)
    (stale / "su").write_bytes(b"#!/bin/sh\n")
    (stale / "su").chmod(0o4755)
    (root / "tmp" / "blob-0123").write_bytes(b"half a blob")
    assert as_nobody(stale / "su") == ["reachable"]
    store = ImageStore(root)
    assert list((root / "tmp").iterdir()) == []
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert as_nobody(root / "tmp") == ["PermissionError"]
    assert store.list() == []


# -- caps on untrusted content ----------------------------------------------------------------


class _Counting:
    def __init__(self, raw: Any) -> None:
        self.raw, self.read_bytes = raw, 0

    def read(self, n: int = -1) -> bytes:
        data: bytes = self.raw.read(n)
        self.read_bytes += len(data)
        return data


def test_gzip_bomb_layer_is_refused_while_streaming(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bomb = bb.layer_tar([Entry("zeros", data=bytes(64 << 20))])  # gzips to ~64 KiB
    layout = _oci_dir(tmp_path, [bomb])
    limits = ImageLimits(layer_bytes=8 << 20)
    store = ImageStore(tmp_path / "images", limits)
    streams: list[_Counting] = []
    real = load_mod.decompressed_stream

    def counting(raw: Any, media_type: str) -> Any:
        streams.append(_Counting(real(raw, media_type)))
        return streams[-1]

    monkeypatch.setattr(load_mod, "decompressed_stream", counting)
    with pytest.raises(ImageError) as info:
        store.load(layout)
    message = str(info.value)
    assert f"diff_id {sha(bomb)}" in message
    assert "8 MiB (image_layer_max_bytes, NYXD_IMAGE_LAYER_MAX_BYTES)" in message
    assert isinstance(info.value, ConfigError)  # the image is bad (400), not nyxd
    (stream,) = streams
    assert stream.read_bytes <= (8 << 20) + (2 << 20)  # stopped at the cap, not at 64 MiB
    assert_store_empty(store)
    assert list((store.root / "blobs" / "sha256").iterdir()) == []  # the load rolled back


def test_image_cap_counts_every_layer(tmp_path: Path) -> None:
    layers = [bb.layer_tar([Entry(f"f{n}", data=bytes(3 << 20))]) for n in range(3)]
    limits = ImageLimits(layer_bytes=4 << 20, image_bytes=8 << 20)
    store = ImageStore(tmp_path / "images", limits)
    with pytest.raises(ImageError, match=r"8 MiB \(image_max_bytes, NYXD_IMAGE_MAX_BYTES\)"):
        store.load(_oci_dir(tmp_path, layers))
    assert_store_empty(store)


def test_layer_entry_cap(tmp_path: Path) -> None:
    layer = bb.layer_tar([Entry(f"f{n}") for n in range(20)])
    store = ImageStore(tmp_path / "images", ImageLimits(layer_entries=10))
    with pytest.raises(ImageError, match=r"more entries than the cap of 10 \(image_layer_max"):
        store.load(_oci_dir(tmp_path, [layer]))
    assert_store_empty(store)


def test_config_blob_over_the_cap_is_refused(store: ImageStore, tmp_path: Path) -> None:
    layer = bb.layer_tar([Entry("f", data=b"x")])
    config = bb.image_config([sha(layer)], extra={"Labels": {"pad": "x" * (5 << 20)}})
    out = tmp_path / "layout"
    bb.write_oci_layout(out, [layer], config, ["t:1"], as_dir=True)
    with pytest.raises(ImageError, match=r"4 MiB \(image_config_max_bytes"):
        store.load(out)
    assert_store_empty(store)
    assert list((store.root / "blobs" / "sha256").iterdir()) == []


def test_docker_archive_config_over_the_cap_is_refused(store: ImageStore, tmp_path: Path) -> None:
    layer = bb.layer_tar([Entry("f", data=b"x")])
    config = bb.image_config([sha(layer)], extra={"Labels": {"pad": "x" * (5 << 20)}})
    bb.write_docker_archive(tmp_path / "d.tar", [layer], config, ["t:1"])
    with pytest.raises(ImageError, match=r"config is larger than the cap of 4 MiB"):
        store.load(tmp_path / "d.tar")
    assert_store_empty(store)


def test_deeply_nested_json_is_a_clean_error(store: ImageStore, tmp_path: Path) -> None:
    layout = _oci_dir(tmp_path, [bb.layer_tar([Entry("f")])])
    (layout / "index.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(ImageError, match="index.json' is not valid JSON"):
        store.load(layout)


def test_oversized_tar_header_is_refused(store: ImageStore, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("f")
        info.pax_headers = {"comment": "x" * (2 << 20)}  # tarfile reads it in one piece
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(ImageError, match="a tar header of"):
        store.load(_oci_dir(tmp_path, [buf.getvalue()]))
    assert_store_empty(store)


def _device_layer(devices: list[tuple[str, bytes, int, int]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        d = tarfile.TarInfo("dev")
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(d)
        for name, kind, major, minor in devices:
            info = tarfile.TarInfo(f"dev/{name}")
            info.type, info.mode = kind, 0o6666
            info.devmajor, info.devminor = major, minor
            tar.addfile(info)
        link = tarfile.TarInfo("dev/disk-link")
        link.type, link.linkname = tarfile.LNKTYPE, "dev/sda"
        tar.addfile(link)
    return buf.getvalue()


def test_device_nodes_only_those_a_container_may_open(store: ImageStore, tmp_path: Path) -> None:
    layer = _device_layer(
        [
            ("null", tarfile.CHRTYPE, 1, 3),
            ("sda", tarfile.BLKTYPE, 8, 0),
            ("mem", tarfile.CHRTYPE, 1, 1),
            ("tty1", tarfile.CHRTYPE, 4, 1),
        ]
    )
    (image,) = store.load(_oci_dir(tmp_path, [layer]))
    (dev,) = (d / "dev" for d in store.layer_dirs(image))
    assert sorted(p.name for p in dev.iterdir()) == ["null"]
    st = os.lstat(dev / "null")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    assert stat.S_IMODE(st.st_mode) == 0o666  # no set-id bits on a device


def test_only_harmless_xattrs_are_kept(store: ImageStore, tmp_path: Path) -> None:
    cap_net_raw = "\x01\x00\x00\x02\x00\x20\x00\x00" + "\x00" * 12  # vfs_cap_data v2, +ep
    xattrs = {
        "user.nyx": "kept",
        "security.capability": cap_net_raw,
        "trusted.nyx": "dropped",
        "security.ima": "dropped",
    }
    layer = bb.layer_tar([Entry("ping", data=b"\x7fELF", mode=0o755, xattrs=xattrs)])
    (image,) = store.load(_oci_dir(tmp_path, [layer]))
    ping = store.layer_dirs(image)[0] / "ping"
    assert sorted(os.listxattr(ping)) == ["security.capability", "user.nyx"]
    assert os.getxattr(ping, "security.capability") == cap_net_raw.encode()
