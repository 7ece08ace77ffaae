"""A netns path that exists but is not a namespace any more (the empty file a crash or a
reboot leaves) is gone for nyxd: never adopted, deleted without error, made again."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nyx_cli.daemon._netns import MS_BIND, create_netns, delete_netns, is_netns, mount, umount

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_kernel")]


@pytest.fixture
def path(tmp_path: Path) -> Iterator[Path]:
    p = tmp_path / "netns" / f"nyxt-{os.getpid()}"
    try:
        yield p
    finally:
        while umount(p):
            pass


def test_a_real_netns_is_one(path: Path) -> None:
    create_netns(path)
    assert is_netns(path)
    delete_netns(path)
    assert not path.exists() and not is_netns(path)


def test_the_empty_file_a_crash_leaves_is_not_a_netns(path: Path) -> None:
    create_netns(path)
    assert umount(path)  # what a reboot or the end of nyxd's mount namespace does
    assert path.is_file() and path.stat().st_size == 0
    assert not is_netns(path)
    delete_netns(path)  # gone: no error, the file is removed
    assert not path.exists()


def test_a_stale_file_does_not_stop_a_new_netns_there(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.touch()
    create_netns(path)
    assert is_netns(path)
    delete_netns(path)


def test_other_files_and_namespaces_mounted_there_are_not_a_netns(
    path: Path, tmp_path: Path
) -> None:
    path.parent.mkdir(parents=True)
    path.touch()
    plain = tmp_path / "plain"
    plain.write_text("not a namespace\n")
    mount(plain, path, None, MS_BIND)
    assert not is_netns(path)  # a mount point, but of a regular file
    assert umount(path)
    mount("/proc/self/ns/uts", path, None, MS_BIND)
    assert not is_netns(path)  # a namespace, but not a network one
    assert umount(path)
    delete_netns(path)
    assert not path.exists()


def test_a_netns_path_that_is_no_namespace_is_gone_for_nsenter_too(path: Path) -> None:
    """What a driver's teardown meets: entering it fails (nothing to clean inside)."""
    path.parent.mkdir(parents=True)
    path.touch()
    r = subprocess.run(["nsenter", f"--net={path}", "true"], capture_output=True)
    assert r.returncode != 0
    delete_netns(path)
