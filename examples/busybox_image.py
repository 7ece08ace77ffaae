"""Build a small busybox image from the distro's static busybox, without any network.

The rootfs holds ``/bin/busybox`` (Debian's ``busybox-static``), a link per applet (``sh``,
``httpd``, ``wget``, ``nslookup``, ``nc``, ``ip`` ...), ``/etc/passwd``, ``/etc/group`` and a
``/www/index.html`` for ``httpd -f -p 80 -h /www``. The image config runs ``sh``.

    python examples/busybox_image.py busybox.tar                  # docker save archive
    python examples/busybox_image.py busybox.tar --format oci     # OCI image layout (tar)
    python examples/busybox_image.py --oci-dir ./busybox-oci      # OCI image layout (dir)
    nyx load busybox.tar && nyx run --rm busybox:nyx echo hello

The helpers (:func:`layer_tar`, :func:`write_docker_archive`, :func:`write_oci_layout`) are
reused by the tests to craft images (multi-layer, whiteouts). Only the standard library.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import platform
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Entry",
    "busybox_entries",
    "image_config",
    "layer_tar",
    "main",
    "write_docker_archive",
    "write_oci_layout",
]

MTIME = 1_700_000_000  # fixed: the same busybox gives the same image digests
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_APPLET_NAMES = """
sh ash cat echo sleep hostname ip ifconfig route httpd wget nslookup nc ping ls ps kill id
env mkdir rm cp mv ln chmod chown touch grep sed awk head tail wc sort uname date true
false test printf pwd readlink stat which top free df mount umount dmesg vi
"""
APPLETS = _APPLET_NAMES.split()  # used when `busybox --list-full` is unavailable
PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = """root:x:0:
daemon:x:1:
tty:x:5:
www-data:x:33:
staff:x:50:www-data
nogroup:x:65534:
"""
INDEX_HTML = "<html><body><h1>hello from nyx</h1></body></html>\n"


@dataclass
class Entry:
    """One member of a layer tar: ``kind`` is file, dir, symlink, hardlink, char or fifo."""

    name: str
    kind: str = "file"
    data: bytes = b""
    mode: int = 0o644
    target: str = ""
    uid: int = 0
    gid: int = 0
    xattrs: dict[str, str] = field(default_factory=dict)


_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "char": tarfile.CHRTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def layer_tar(entries: Iterable[Entry]) -> bytes:
    """An uncompressed, reproducible layer tar (PAX, so xattrs can be carried)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type = _TYPES[e.kind]
            info.mode = e.mode
            info.mtime = MTIME
            info.uid, info.gid = e.uid, e.gid
            info.uname = info.gname = ""
            if e.kind in ("symlink", "hardlink"):
                info.linkname = e.target
            if e.xattrs:
                info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in e.xattrs.items()}
            if e.kind == "file":
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def _applets(busybox: Path) -> list[str]:
    """Applet paths (``bin/sh``, ``usr/bin/wget`` ...) this busybox provides."""
    try:
        out = subprocess.run(
            [str(busybox), "--list-full"], capture_output=True, text=True, check=True
        ).stdout
        listed = [line.strip() for line in out.splitlines() if line.strip()]
    except (OSError, subprocess.CalledProcessError):
        listed = []
    if not listed:
        listed = [f"bin/{name}" for name in APPLETS]
    seen = {"bin/busybox"}
    result = []
    for path in listed:
        if path not in seen and "/" in path:
            seen.add(path)
            result.append(path)
    return result


def busybox_entries(busybox: Path = Path("/bin/busybox")) -> list[Entry]:
    """The rootfs of the busybox image as tar entries."""
    if not busybox.is_file():
        raise SystemExit(
            f"{busybox} not found: install busybox-static (apt-get install -y busybox-static)"
        )
    dirs = ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "home", "var", "var/www"]
    dirs += ["www", "dev", "proc", "sys", "run"]
    entries = [Entry(d, "dir", mode=0o755) for d in dirs]
    entries.append(Entry("tmp", "dir", mode=0o1777))
    entries[dirs.index("root")].mode = 0o700
    entries.append(Entry("bin/busybox", "file", busybox.read_bytes(), mode=0o755))
    for path in _applets(busybox):
        target = "busybox" if path.startswith("bin/") else "../" * path.count("/") + "bin/busybox"
        entries.append(Entry(path, "symlink", target=target))
    entries += [
        Entry("etc/passwd", data=PASSWD.encode()),
        Entry("etc/group", data=GROUP.encode()),
        Entry("www/index.html", data=INDEX_HTML.encode()),
    ]
    return entries


def _arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(
        machine, machine
    )


def image_config(
    diff_ids: Sequence[str], *, cmd: Sequence[str] = ("sh",), extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An OCI image config for layers with these uncompressed digests."""
    created = "2023-11-14T22:13:20Z"
    config: dict[str, Any] = {"Env": [f"PATH={DEFAULT_PATH}"], "Cmd": list(cmd)}
    config.update(extra or {})
    return {
        "created": created,
        "architecture": _arch(),
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [
            {"created": created, "created_by": "examples/busybox_image.py"} for _ in diff_ids
        ],
    }


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _write_members(out: Path, members: dict[str, bytes], as_dir: bool) -> None:
    if as_dir:
        for name, data in members.items():
            path = out / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        made: set[str] = set()
        for name, data in members.items():
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in made:
                    made.add(d)
                    info = tarfile.TarInfo(d)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, MTIME
                    tar.addfile(info)
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, MTIME
            tar.addfile(info, io.BytesIO(data))


def write_docker_archive(
    out: Path, layers: Sequence[bytes], config: dict[str, Any], tags: Sequence[str]
) -> str:
    """Write a ``docker save`` archive (uncompressed layers); returns the config digest."""
    config_bytes = _json(config)
    config_hex = _sha(config_bytes)
    members: dict[str, bytes] = {}
    layer_paths = []
    parent = ""
    for layer in layers:
        layer_id = _sha((parent + _sha(layer)).encode())
        members[f"{layer_id}/VERSION"] = b"1.0"
        members[f"{layer_id}/json"] = _json(
            {"id": layer_id, "parent": parent} if parent else {"id": layer_id}
        )
        members[f"{layer_id}/layer.tar"] = layer
        layer_paths.append(f"{layer_id}/layer.tar")
        parent = layer_id
    members[f"{config_hex}.json"] = config_bytes
    members["manifest.json"] = _json(
        [{"Config": f"{config_hex}.json", "RepoTags": list(tags), "Layers": layer_paths}]
    )
    repositories: dict[str, dict[str, str]] = {}
    for tag in tags:
        repo, _, name = tag.rpartition(":")
        repositories.setdefault(repo, {})[name] = parent
    members["repositories"] = _json(repositories)
    _write_members(out, members, as_dir=False)
    return f"sha256:{config_hex}"


def write_oci_layout(
    out: Path,
    layers: Sequence[bytes],
    config: dict[str, Any],
    tags: Sequence[str],
    *,
    as_dir: bool = False,
    compress: bool = True,
) -> str:
    """Write an OCI image layout (dir or tar; gzip layers); returns the manifest digest."""
    members: dict[str, bytes] = {"oci-layout": _json({"imageLayoutVersion": "1.0.0"})}
    descriptors = []
    for layer in layers:
        blob = gzip.compress(layer, mtime=0) if compress else layer
        members[f"blobs/sha256/{_sha(blob)}"] = blob
        media = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if compress else "")
        descriptors.append(
            {"mediaType": media, "digest": f"sha256:{_sha(blob)}", "size": len(blob)}
        )
    config_bytes = _json(config)
    members[f"blobs/sha256/{_sha(config_bytes)}"] = config_bytes
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": f"sha256:{_sha(config_bytes)}",
            "size": len(config_bytes),
        },
        "layers": descriptors,
    }
    manifest_bytes = _json(manifest)
    members[f"blobs/sha256/{_sha(manifest_bytes)}"] = manifest_bytes
    base = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": f"sha256:{_sha(manifest_bytes)}",
        "size": len(manifest_bytes),
        "platform": {"architecture": config["architecture"], "os": config["os"]},
    }
    index_entries = [
        dict(base, annotations={"org.opencontainers.image.ref.name": tag}) for tag in tags
    ] or [base]
    members["index.json"] = _json(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": index_entries,
        }
    )
    if as_dir and out.exists():
        shutil.rmtree(out)
    _write_members(out, members, as_dir=as_dir)
    return f"sha256:{_sha(manifest_bytes)}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, help="archive to write (a .tar)")
    parser.add_argument("--tag", default="busybox:nyx", help="image name (default busybox:nyx)")
    parser.add_argument(
        "--format",
        choices=("docker", "oci"),
        default="docker",
        help="docker save archive (default) or OCI image layout tar",
    )
    parser.add_argument("--oci-dir", type=Path, help="write an OCI image layout directory")
    parser.add_argument("--busybox", type=Path, default=Path("/bin/busybox"))
    args = parser.parse_args(argv)
    if args.out is None and args.oci_dir is None:
        parser.error("give OUT.tar and/or --oci-dir DIR")
    layer = layer_tar(busybox_entries(args.busybox))
    config = image_config([f"sha256:{_sha(layer)}"])
    if args.out is not None:
        if args.format == "docker":
            image_id = write_docker_archive(args.out, [layer], config, [args.tag])
        else:
            write_oci_layout(args.out, [layer], config, [args.tag])
            image_id = f"sha256:{_sha(_json(config))}"
        print(f"{args.out}: {args.format} archive of {args.tag} ({image_id})")
    if args.oci_dir is not None:
        write_oci_layout(args.oci_dir, [layer], config, [args.tag], as_dir=True)
        print(f"{args.oci_dir}: OCI image layout of {args.tag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
