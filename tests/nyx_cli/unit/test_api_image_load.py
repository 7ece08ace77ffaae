"""`nyx load` through the API into the real image store: a file, an OCI layout directory
(streamed as a tar by the client, since nyxd no longer opens client-named paths) and stdin."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from nyx_cli.client import cli
from nyx_cli.daemon._api import ApiServer
from nyx_cli.images._store import ImageStore

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.skipif(
    shutil.which("busybox") is None or os.geteuid() != 0,
    reason="needs busybox-static and root (layers are unpacked with their owners)",
)


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("archives")
    script = str(ROOT / "examples/busybox_image.py")
    subprocess.run([sys.executable, script, str(out / "docker.tar")], check=True)
    subprocess.run(
        [sys.executable, script, "--oci-dir", str(out / "oci-dir"), "--tag", "busybox:oci"],
        check=True,
    )
    return {"docker": out / "docker.tar", "dir": out / "oci-dir"}


@pytest.fixture
def store_api(tmp_path: Path, fake_sup: Any) -> Iterator[tuple[Path, ImageStore]]:
    store = ImageStore(tmp_path / "images")

    def load_image(path: Path) -> list[dict[str, Any]]:
        return [i.model_dump(mode="json") for i in store.load(path)]

    fake_sup.load_image = load_image
    server = ApiServer(tmp_path / "run" / "nyxd.sock", fake_sup)
    server.start()
    try:
        yield server.path, store
    finally:
        server.close()


def nyx(sock: Path, *args: str, input: bytes | None = None) -> Any:
    return CliRunner().invoke(cli, ["--socket", str(sock), *args], input=input)


def test_nyx_load_file_directory_and_stdin(
    store_api: tuple[Path, ImageStore], archives: dict[str, Path], tmp_path: Path
) -> None:
    sock, store = store_api
    r = nyx(sock, "load", "-i", str(archives["dir"]))
    assert r.exit_code == 0, r.output
    assert "Loaded image: busybox:oci" in r.output
    r = nyx(sock, "load", "-i", str(archives["docker"]))
    assert r.exit_code == 0 and "Loaded image: busybox:nyx" in r.output, r.output
    r = nyx(sock, "load", input=archives["docker"].read_bytes())
    assert r.exit_code == 0 and "Loaded image: busybox:nyx" in r.output, r.output
    assert sorted(t for i in store.list() for t in i.repo_tags) == ["busybox:nyx", "busybox:oci"]
    assert not list((tmp_path / "state" / "tmp").iterdir())


def test_nyx_load_of_an_unreadable_input_is_one_line(store_api: tuple[Path, ImageStore]) -> None:
    sock, _ = store_api
    r = nyx(sock, "load", "-i", "/nonexistent/image.tar")
    assert r.exit_code != 0 and "cannot read '/nonexistent/image.tar'" in r.output
