"""``nyx pull`` against a real ``docker-registry`` on 127.0.0.1, images pushed by skopeo.

Bearer tokens are tested twice: against the registry's own ``auth: token`` with a JWT realm
written in the test (RS256, signed with the openssl CLI, certificate in ``x5c``), and through
a small token-auth proxy in front of an open registry, which also lets the tests cut,
corrupt, redirect and slow down downloads.
"""

from __future__ import annotations

import base64
import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from registry_fixtures import (
    Layout,
    ProxyState,
    Registry,
    build_layout,
    check_layout,
    http_push,
    run_registry,
    run_token_proxy,
    skopeo_available,
    skopeo_push,
)

from nyx_cli.daemon._settings import DaemonSettings
from nyx_cli.errors import (
    DigestMismatchError,
    ImageNotFoundError,
    NoMatchingPlatformError,
    RegistryError,
    UnauthorizedError,
)
from nyx_cli.images._compression import decompressed_stream, zstd_available
from nyx_cli.registry._pull import ProgressEvent, login, pull_to_oci_layout
from nyx_core.errors import NyxError

pytestmark = pytest.mark.skipif(
    not skopeo_available(), reason="needs /usr/bin/docker-registry and skopeo"
)

AMD64 = "linux/amd64"


@dataclass
class Pushed:
    registry: Registry
    layouts: dict[str, Layout]

    def ref(self, repo: str, tag: str = "v1") -> str:
        return f"{self.registry.host}/{repo}:{tag}"


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushed]:
    work = tmp_path_factory.mktemp("registry")
    with run_registry(work / "reg") as registry:
        host = registry.host
        src = work / "src"
        layouts: dict[str, Layout] = {}

        def push(name: str, layout: Layout, *extra: str) -> None:
            skopeo_push(layout.path, "v1", f"{host}/{name}:v1", *extra)
            layouts[name] = layout

        push(
            "multi",
            build_layout(src / "multi", "v1", [("amd64", ""), ("arm64", "v8"), ("arm", "v7")]),
            "--all",
        )
        push("schema2", build_layout(src / "s2", "v1", [("amd64", "")]), "--format", "v2s2")
        push("oci", build_layout(src / "oci", "v1", [("amd64", "")], layers=4))
        if zstd_available():  # else the zstd tests skip, nothing else does
            push("zstd", build_layout(src / "zstd", "v1", [("amd64", "")], compression="zstd"))
        # skopeo recompresses a gzip image to zstd (blobs the registry lacks, hence riscv64)
        push(
            "zstd-skopeo",
            build_layout(src / "zstd-skopeo", "v1", [("riscv64", "")]),
            "--dest-compress-format",
            "zstd",
        )
        plain = build_layout(src / "plain", "v1", [("amd64", "")], compression="none")
        http_push(plain, host, "plain", "v1")
        layouts["plain"] = plain
        push("big", build_layout(src / "big", "v1", [("amd64", "")], layer_bytes=1 << 20))
        push("tamper", build_layout(src / "tamper", "v1", [("s390x", "")]))
        push("arm-only", build_layout(src / "armonly", "v1", [("arm64", "v8")]))
        yield Pushed(registry, layouts)
    assert registry.proc.poll() is not None  # the registry process is gone


def _files(layout_dir: Path, manifest_digest: str) -> dict[str, bytes]:
    """The files of every layer of a pulled image, read through decompressed_stream."""
    blobs = layout_dir / "blobs" / "sha256"
    manifest = json.loads((blobs / manifest_digest.split(":")[1]).read_bytes())
    out: dict[str, bytes] = {}
    for layer in manifest["layers"]:
        with open(blobs / layer["digest"].split(":")[1], "rb") as fh:
            stream = decompressed_stream(fh, layer["mediaType"])
            with tarfile.open(fileobj=io.BytesIO(stream.read()), mode="r:") as tar:
                for member in tar.getmembers():
                    f = tar.extractfile(member)
                    if f is not None:
                        out[member.name] = f.read()
    return out


# --------------------------------------------------------------------------- formats


def test_multiarch_index_picks_host_platform(pushed: Pushed, tmp_path: Path) -> None:
    layout = pushed.layouts["multi"]
    events: list[ProgressEvent] = []
    got = pull_to_oci_layout(
        pushed.ref("multi"), tmp_path / "out", platform=AMD64, progress=events.append
    )
    amd = next(i for i in layout.images if i.arch == "amd64")
    assert got.reference == pushed.ref("multi")
    assert got.digest == amd.manifest_digest
    assert got.index_digest == layout.top_digest
    assert got.platform == "linux/amd64"
    assert got.layout_path == tmp_path / "out"
    assert got.repo_digest == f"{pushed.registry.host}/multi@{layout.top_digest}"
    [entry] = check_layout(tmp_path / "out")
    assert entry["digest"] == amd.manifest_digest
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == pushed.ref("multi")
    assert entry["platform"] == {"os": "linux", "architecture": "amd64"}
    assert "hello-amd64.txt" in " ".join(_files(tmp_path / "out", got.digest))
    kinds = [e.kind for e in events]
    assert kinds[0] == "resolve" and kinds[1] == "manifest" and kinds[-1] == "done"
    assert kinds.count("blob-done") == 2  # config + one layer
    assert got.downloaded == got.size == sum(e.total for e in events if e.kind == "blob-done")


@pytest.mark.parametrize(("plat", "arch"), [("linux/arm64", "arm64"), ("linux/arm/v7", "arm")])
def test_multiarch_explicit_platform(pushed: Pushed, tmp_path: Path, plat: str, arch: str) -> None:
    got = pull_to_oci_layout(pushed.ref("multi"), tmp_path, platform=plat)
    want = next(i for i in pushed.layouts["multi"].images if i.arch == arch)
    assert got.digest == want.manifest_digest
    assert got.platform == plat if arch == "arm" else got.platform == "linux/arm64/v8"
    check_layout(tmp_path)
    assert f"hello-{arch}.txt" in " ".join(_files(tmp_path, got.digest))


def test_docker_schema2_is_stored_as_is(pushed: Pushed, tmp_path: Path) -> None:
    got = pull_to_oci_layout(pushed.ref("schema2"), tmp_path, platform=AMD64)
    assert got.media_type == "application/vnd.docker.distribution.manifest.v2+json"
    [entry] = check_layout(tmp_path)
    assert entry["mediaType"] == got.media_type
    manifest = json.loads((tmp_path / "blobs/sha256" / got.digest.split(":")[1]).read_bytes())
    assert manifest["layers"][0]["mediaType"] == (
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    )
    assert _files(tmp_path, got.digest)


@pytest.mark.parametrize(
    ("repo", "layer_type"),
    [
        ("oci", "application/vnd.oci.image.layer.v1.tar+gzip"),
        ("zstd", "application/vnd.oci.image.layer.v1.tar+zstd"),
        ("zstd-skopeo", "application/vnd.oci.image.layer.v1.tar+zstd"),
        ("plain", "application/vnd.oci.image.layer.v1.tar"),
    ],
)
def test_oci_layer_compressions(pushed: Pushed, tmp_path: Path, repo: str, layer_type: str) -> None:
    if repo.startswith("zstd") and not zstd_available():
        pytest.skip("zstandard is not installed (pip install 'nyx-core[zstd]')")
    layout = pushed.layouts[repo]
    plat = "linux/riscv64" if repo == "zstd-skopeo" else None
    got = pull_to_oci_layout(pushed.ref(repo), tmp_path, platform=plat)
    if repo != "zstd-skopeo":  # skopeo rewrote that manifest
        assert got.digest == layout.images[0].manifest_digest
    assert got.index_digest is None
    check_layout(tmp_path)
    manifest = json.loads((tmp_path / "blobs/sha256" / got.digest.split(":")[1]).read_bytes())
    assert {layer["mediaType"] for layer in manifest["layers"]} == {layer_type}
    files = _files(tmp_path, got.digest)
    expected = {}
    for tar_bytes in layout.images[0].tars:
        with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
            for m in tar.getmembers():
                f = tar.extractfile(m)
                assert f is not None
                expected[m.name] = f.read()
    assert files == expected


def test_layout_is_readable_by_skopeo(pushed: Pushed, tmp_path: Path) -> None:
    import subprocess

    got = pull_to_oci_layout(pushed.ref("oci"), tmp_path / "lay")
    proc = subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            f"oci:{tmp_path / 'lay'}:{got.reference}",
            f"dir:{tmp_path / 'd'}",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "d" / "manifest.json").read_bytes() == (
        tmp_path / "lay/blobs/sha256" / got.digest.split(":")[1]
    ).read_bytes()


def test_pull_by_digest(pushed: Pushed, tmp_path: Path) -> None:
    layout = pushed.layouts["multi"]
    arm = next(i for i in layout.images if i.arch == "arm64")
    ref = f"{pushed.registry.host}/multi@{arm.manifest_digest}"
    got = pull_to_oci_layout(ref, tmp_path)
    assert got.digest == arm.manifest_digest
    assert got.reference == ref
    [entry] = check_layout(tmp_path)
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == ref
    # tag and digest: the digest wins
    both = f"{pushed.registry.host}/multi:v1@{layout.top_digest}"
    got2 = pull_to_oci_layout(both, tmp_path / "b", platform="linux/arm64")
    assert got2.index_digest == layout.top_digest and got2.digest == arm.manifest_digest


# --------------------------------------------------------------------------- errors


def test_unknown_image_and_tag(pushed: Pushed, tmp_path: Path) -> None:
    with pytest.raises(ImageNotFoundError) as info:
        pull_to_oci_layout(pushed.ref("does/not-exist"), tmp_path)
    assert "does/not-exist" in str(info.value)
    with pytest.raises(ImageNotFoundError, match="no-such-tag"):
        pull_to_oci_layout(pushed.ref("multi", "no-such-tag"), tmp_path)
    unknown = "sha256:" + "0" * 64
    with pytest.raises(ImageNotFoundError, match=unknown):
        pull_to_oci_layout(f"{pushed.registry.host}/multi@{unknown}", tmp_path)
    assert not (tmp_path / "index.json").exists()


def test_no_matching_platform(pushed: Pushed, tmp_path: Path) -> None:
    with pytest.raises(NoMatchingPlatformError) as info:
        pull_to_oci_layout(pushed.ref("multi"), tmp_path, platform="linux/s390x")
    assert "linux/amd64" in str(info.value) and "linux/s390x" in str(info.value)
    with pytest.raises(NoMatchingPlatformError, match="single-platform image for linux/arm64"):
        pull_to_oci_layout(pushed.ref("arm-only"), tmp_path / "a", platform=AMD64)


def test_invalid_reference_is_rejected_before_any_request(tmp_path: Path) -> None:
    with pytest.raises(NyxError, match="UPPER"):
        pull_to_oci_layout("127.0.0.1:1/UPPER:x", tmp_path)


def test_unreachable_registry(tmp_path: Path) -> None:
    from registry_fixtures import free_port

    with pytest.raises(RegistryError, match="cannot reach registry"):
        pull_to_oci_layout(f"127.0.0.1:{free_port()}/app:1", tmp_path)


def test_corrupted_blob_in_registry_storage_is_rejected(pushed: Pushed, tmp_path: Path) -> None:
    image = pushed.layouts["tamper"].images[0]
    layer_digest = json.loads(image.manifest)["layers"][0]["digest"]
    data_path = pushed.registry.blob_data_path(layer_digest)
    original = data_path.read_bytes()
    data_path.write_bytes(bytes([original[0] ^ 0xFF]) + original[1:])  # same size
    try:
        with pytest.raises(DigestMismatchError) as info:
            pull_to_oci_layout(pushed.ref("tamper"), tmp_path, platform="linux/s390x")
        assert layer_digest in str(info.value)
    finally:
        data_path.write_bytes(original)
    blob = tmp_path / "blobs/sha256" / layer_digest.split(":")[1]
    assert not blob.exists()
    assert not blob.with_name(blob.name + ".partial").exists()
    assert not [p for p in (tmp_path / "blobs").rglob("*.partial") if p.stat().st_size == 0]
    assert not (tmp_path / "index.json").exists()
    # the registry repaired: the same pull now succeeds into the same directory
    pull_to_oci_layout(pushed.ref("tamper"), tmp_path, platform="linux/s390x")
    check_layout(tmp_path)


# --------------------------------------------------------------------------- caching, resume


def test_present_blobs_are_skipped(pushed: Pushed, tmp_path: Path) -> None:
    first = pull_to_oci_layout(pushed.ref("oci"), tmp_path)
    assert first.downloaded == first.size
    events: list[ProgressEvent] = []
    again = pull_to_oci_layout(pushed.ref("oci"), tmp_path, progress=events.append)
    assert again.downloaded == 0
    assert {e.kind for e in events} == {"resolve", "manifest", "blob-skip", "done"}
    assert len(check_layout(tmp_path)) == 1  # the entry for the reference is replaced
    # a second image in the same layout keeps the first one's entry
    pull_to_oci_layout(pushed.ref("schema2"), tmp_path)
    names = {e["annotations"]["org.opencontainers.image.ref.name"] for e in check_layout(tmp_path)}
    assert names == {pushed.ref("oci"), pushed.ref("schema2")}


def test_shared_blob_cache(pushed: Pushed, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    a = pull_to_oci_layout(pushed.ref("oci"), tmp_path / "a", blob_cache=cache)
    assert a.downloaded == a.size
    assert len(list((cache / "blobs/sha256").iterdir())) == 6  # config + 4 layers + manifest
    b = pull_to_oci_layout(pushed.ref("oci"), tmp_path / "b", blob_cache=cache)
    assert b.downloaded == 0
    check_layout(tmp_path / "b")
    # schema2's only layer is oci's first one: only its manifest's config is fetched
    c = pull_to_oci_layout(pushed.ref("schema2"), tmp_path / "c", blob_cache=cache)
    check_layout(tmp_path / "c")
    assert 0 < c.downloaded < c.size


def test_interrupted_download_is_resumed_with_range(pushed: Pushed, tmp_path: Path) -> None:
    image = pushed.layouts["big"].images[0]
    layer = json.loads(image.manifest)["layers"][0]
    state = ProxyState(upstream=pushed.registry.host, mode="none")
    state.cut_blob_after[layer["digest"]] = 300_000
    with run_token_proxy(state) as (host, _):
        events: list[ProgressEvent] = []
        got = pull_to_oci_layout(f"{host}/big:v1", tmp_path, progress=events.append, retries=3)
    check_layout(tmp_path)
    assert got.digest == image.manifest_digest
    ranges = [h.get("Range") for (_, path, h) in state.requests if path.endswith(layer["digest"])]
    assert ranges[0] is None
    assert ranges[1] is not None and ranges[1].startswith("bytes=")
    assert 0 < int(ranges[1][6:].rstrip("-")) <= 300_000
    assert any("retrying" in e.message for e in events)
    assert got.downloaded == got.size  # nothing fetched twice


def test_interrupted_download_restarts_when_range_is_ignored(
    pushed: Pushed, tmp_path: Path
) -> None:
    image = pushed.layouts["big"].images[0]
    layer = json.loads(image.manifest)["layers"][0]
    state = ProxyState(upstream=pushed.registry.host, mode="none", ignore_range=True)
    state.cut_blob_after[layer["digest"]] = 200_000
    with run_token_proxy(state) as (host, _):
        got = pull_to_oci_layout(f"{host}/big:v1", tmp_path)
    check_layout(tmp_path)
    assert got.downloaded > got.size  # the first 200 kB came twice


def test_corrupted_blob_in_transit_is_rejected(pushed: Pushed, tmp_path: Path) -> None:
    image = pushed.layouts["oci"].images[0]
    config_digest = json.loads(image.manifest)["config"]["digest"]
    state = ProxyState(upstream=pushed.registry.host, mode="none")
    state.corrupt_blob.add(config_digest)
    with run_token_proxy(state) as (host, _), pytest.raises(DigestMismatchError) as info:
        pull_to_oci_layout(f"{host}/oci:v1", tmp_path)
    assert config_digest in str(info.value)
    assert not (tmp_path / "blobs/sha256" / config_digest.split(":")[1]).exists()


# --------------------------------------------------------------------------- auth


def test_anonymous_bearer_token_flow(pushed: Pushed, tmp_path: Path) -> None:
    state = ProxyState(upstream=pushed.registry.host)
    with run_token_proxy(state) as (host, _):
        got = pull_to_oci_layout(f"{host}/multi:v1", tmp_path, platform=AMD64)
    check_layout(tmp_path)
    assert got.index_digest == pushed.layouts["multi"].top_digest
    assert state.token_requests
    assert state.token_requests[0]["service"] == ["nyx-test-registry"]
    assert state.token_requests[0]["scope"] == ["repository:multi:pull"]
    # every registry request after the ping carried the token
    authed = [h.get("Authorization", "") for (_, p, h) in state.requests if "/multi/" in p]
    assert authed and all(a.startswith("Bearer ") for a in authed)


def test_bearer_with_login(pushed: Pushed, tmp_path: Path) -> None:
    auth_file = tmp_path / "docker" / "config.json"
    state = ProxyState(upstream=pushed.registry.host, users={"alice": "s3cret"})
    with run_token_proxy(state) as (host, _):
        with pytest.raises(UnauthorizedError) as info:
            pull_to_oci_layout(f"{host}/oci:v1", tmp_path / "a", auth_file=auth_file)
        assert f"nyx login {host}" in str(info.value)
        with pytest.raises(UnauthorizedError, match="alice"):
            login(host, "alice", "wrong", auth_file)
        assert not auth_file.exists()
        login(host, "alice", "s3cret", auth_file)
        stored = json.loads(auth_file.read_text())["auths"][host]["auth"]
        assert base64.b64decode(stored) == b"alice:s3cret"
        got = pull_to_oci_layout(f"{host}/oci:v1", tmp_path / "b", auth_file=auth_file)
    check_layout(tmp_path / "b")
    assert got.digest == pushed.layouts["oci"].images[0].manifest_digest
    token_auth = [
        h.get("Authorization", "") for (_, p, h) in state.requests if p.startswith("/token")
    ]
    expected = "Basic " + base64.b64encode(b"alice:s3cret").decode()
    assert expected in token_auth
    # the login check asks for an account token without a repository scope
    assert any(q.get("account") == ["alice"] and "scope" not in q for q in state.token_requests)


def test_basic_auth_registry(pushed: Pushed, tmp_path: Path) -> None:
    auth_file = tmp_path / "config.json"
    state = ProxyState(upstream=pushed.registry.host, mode="basic", users={"bob": "pw"})
    with run_token_proxy(state) as (host, _):
        with pytest.raises(UnauthorizedError, match="user name and password"):
            pull_to_oci_layout(f"{host}/oci:v1", tmp_path / "a", auth_file=auth_file)
        with pytest.raises(UnauthorizedError, match="bob"):
            login(host, "bob", "nope", auth_file)
        login(f"http://{host}/v2/", "bob", "pw", auth_file)
        pull_to_oci_layout(f"{host}/oci:v1", tmp_path / "b", auth_file=auth_file)
    check_layout(tmp_path / "b")


def test_stored_credentials_rejected_by_registry(pushed: Pushed, tmp_path: Path) -> None:
    auth_file = tmp_path / "config.json"
    state = ProxyState(upstream=pushed.registry.host, mode="basic", users={"bob": "pw"})
    with run_token_proxy(state) as (host, _):
        auth_file.write_text(
            json.dumps({"auths": {host: {"auth": base64.b64encode(b"bob:stale").decode()}}})
        )
        with pytest.raises(UnauthorizedError, match="denied"):
            pull_to_oci_layout(f"{host}/oci:v1", tmp_path / "a", auth_file=auth_file)


def test_login_to_open_registry_stores_credentials(pushed: Pushed, tmp_path: Path) -> None:
    auth_file = tmp_path / "config.json"
    login(pushed.registry.host, "anyone", "x", auth_file)
    assert pushed.registry.host in json.loads(auth_file.read_text())["auths"]


# --------------------------------------------------------------------------- transport


@pytest.mark.parametrize("workers", [1, 3])
def test_parallel_layer_downloads(pushed: Pushed, tmp_path: Path, workers: int) -> None:
    state = ProxyState(upstream=pushed.registry.host, mode="none", blob_delay=0.3)
    with run_token_proxy(state) as (host, _):
        got = pull_to_oci_layout(f"{host}/oci:v1", tmp_path, max_concurrent_downloads=workers)
    check_layout(tmp_path)
    assert got.downloaded == got.size  # config + 4 layers
    if workers == 1:
        assert state.max_in_flight == 1
    else:
        assert 2 <= state.max_in_flight <= workers


def test_tls_registry(tmp_path: Path) -> None:
    from nyx_cli.registry._client import RegistryClient

    with run_registry(tmp_path / "reg", tls=True) as registry:
        layout = build_layout(tmp_path / "src", "v1", [("amd64", "")])
        skopeo_push(layout.path, "v1", f"{registry.host}/tls:v1")
        events: list[ProgressEvent] = []
        got = pull_to_oci_layout(
            f"{registry.host}/tls:v1", tmp_path / "out", progress=events.append
        )
        assert got.digest == layout.top_digest
        assert events[0].message.startswith(f"https://{registry.host}/")
        check_layout(tmp_path / "out")
        # a registry that is not insecure gets its certificate verified
        strict = RegistryClient(registry.host, insecure=False, credentials=None, timeout=10)
        with pytest.raises(RegistryError, match="insecure registry"):
            strict.ping()


def test_artifact_that_is_not_an_image(pushed: Pushed, tmp_path: Path) -> None:
    import dataclasses

    from registry_fixtures import OCI_MANIFEST, sha256

    image = build_layout(tmp_path / "src", "v1", [("amd64", "")]).images[0]
    manifest = json.loads(image.manifest)
    manifest["config"]["mediaType"] = "application/vnd.cncf.helm.config.v1+json"
    assert manifest["mediaType"] == OCI_MANIFEST
    artifact = dataclasses.replace(image, manifest=json.dumps(manifest).encode())
    http_push(Layout(tmp_path / "src", [artifact]), pushed.registry.host, "chart", "v1")
    with pytest.raises(RegistryError, match="not a container image") as info:
        pull_to_oci_layout(pushed.ref("chart"), tmp_path / "out")
    assert "helm" in str(info.value)
    assert sha256(artifact.manifest) != image.manifest_digest


def test_dest_that_is_a_file(pushed: Pushed, tmp_path: Path) -> None:
    from nyx_core.errors import ConfigError

    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ConfigError, match="image layout directory"):
        pull_to_oci_layout(pushed.ref("oci"), target)


@pytest.fixture
def proxied(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str, str | None]]]:
    """HTTP(S)_PROXY pointing at a forward proxy; loopback is proxied for the test."""
    from registry_fixtures import run_forward_proxy

    import nyx_cli.registry._client as client_mod

    with run_forward_proxy() as (url, seen):
        proxy = url.replace("http://", "http://u%40x:p%3Aw@")
        monkeypatch.setenv("HTTP_PROXY", proxy)
        monkeypatch.setenv("HTTPS_PROXY", proxy)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("http_proxy", raising=False)
        monkeypatch.delenv("https_proxy", raising=False)
        monkeypatch.setattr(client_mod, "_bypass_proxy", lambda parts: False)
        yield seen


def test_http_proxy(
    pushed: Pushed, tmp_path: Path, proxied: list[tuple[str, str, str | None]]
) -> None:
    got = pull_to_oci_layout(pushed.ref("oci"), tmp_path)
    check_layout(tmp_path)
    assert got.downloaded == got.size
    urls = [path for (_, path, _) in proxied]
    assert f"http://{pushed.registry.host}/v2/" in urls
    assert any(u.startswith(f"http://{pushed.registry.host}/v2/oci/blobs/") for u in urls)
    auth = "Basic " + base64.b64encode(b"u@x:p:w").decode()
    assert {a for (_, _, a) in proxied} == {auth}


def test_https_proxy_tunnel(tmp_path: Path, proxied: list[tuple[str, str, str | None]]) -> None:
    with run_registry(tmp_path / "reg", tls=True) as registry:
        layout = build_layout(tmp_path / "src", "v1", [("amd64", "")])
        skopeo_push(layout.path, "v1", f"{registry.host}/tls:v1")  # skopeo: no proxy env
        assert not proxied
        got = pull_to_oci_layout(f"{registry.host}/tls:v1", tmp_path / "out")
    assert got.digest == layout.top_digest
    check_layout(tmp_path / "out")
    assert proxied and {(m, p) for (m, p, _) in proxied} == {("CONNECT", registry.host)}


def _layer_of(pushed: Pushed, repo: str) -> tuple[dict[str, object], bytes]:
    image = pushed.layouts[repo].images[0]
    layer = json.loads(image.manifest)["layers"][0]
    return layer, image.layers[0]


def test_partial_from_an_earlier_pull_is_resumed(pushed: Pushed, tmp_path: Path) -> None:
    layer, data = _layer_of(pushed, "big")
    blobs = tmp_path / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (blobs / f"{str(layer['digest']).split(':')[1]}.partial").write_bytes(data[:100_000])
    state = ProxyState(upstream=pushed.registry.host, mode="none")
    with run_token_proxy(state) as (host, _):
        got = pull_to_oci_layout(f"{host}/big:v1", tmp_path)
    check_layout(tmp_path)
    ranges = [h.get("Range") for (_, p, h) in state.requests if p.endswith(str(layer["digest"]))]
    assert ranges == ["bytes=100000-"]
    assert got.downloaded == got.size - 100_000


@pytest.mark.parametrize("kept", ["complete", "garbage"])
def test_bad_or_complete_partial_is_verified(pushed: Pushed, tmp_path: Path, kept: str) -> None:
    layer, data = _layer_of(pushed, "big")
    blobs = tmp_path / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    content = data if kept == "complete" else bytes(50_000)
    (blobs / f"{str(layer['digest']).split(':')[1]}.partial").write_bytes(content)
    state = ProxyState(upstream=pushed.registry.host, mode="none")
    with run_token_proxy(state) as (host, _):
        got = pull_to_oci_layout(f"{host}/big:v1", tmp_path)
    check_layout(tmp_path)
    ranges = [h.get("Range") for (_, p, h) in state.requests if p.endswith(str(layer["digest"]))]
    if kept == "complete":
        assert ranges == []  # verified from disk, never fetched
        assert got.downloaded == got.size - len(data)
    else:
        assert ranges == ["bytes=50000-", None]  # resumed, failed to verify, fetched anew


def test_bearer_flow_over_tls(pushed: Pushed, tmp_path: Path) -> None:
    """Registry and token realm on HTTPS (Docker Hub's shape), parallel downloads."""
    from registry_fixtures import self_signed_cert

    state = ProxyState(upstream=pushed.registry.host)
    with run_token_proxy(state, tls=self_signed_cert(tmp_path)) as (host, _):
        events: list[ProgressEvent] = []
        got = pull_to_oci_layout(
            f"{host}/oci:v1", tmp_path / "out", progress=events.append, max_concurrent_downloads=3
        )
    check_layout(tmp_path / "out")
    assert events[0].message.startswith(f"https://{host}/")
    assert got.downloaded == got.size
    assert state.token_requests


def test_registry_token_auth_with_jwt_realm(tmp_path: Path) -> None:
    """docker-registry's own ``auth: token`` with a JWT realm: the registry verifies tokens."""
    from registry_fixtures import run_jwt_token_server, self_signed_cert

    cert, key = self_signed_cert(tmp_path / "pki")
    service, issuer = "nyx-test-registry", "nyx-test-issuer"
    users = {"carol": "pw"}
    with run_jwt_token_server(cert, key, issuer=issuer, service=service, users=users) as realm:
        auth = {"realm": realm.url, "service": service, "issuer": issuer, "rootcertbundle": cert}
        with run_registry(tmp_path / "reg", token_auth={k: str(v) for k, v in auth.items()}) as reg:
            layout = build_layout(tmp_path / "src", "v1", [("amd64", "")])
            skopeo_push(layout.path, "v1", f"{reg.host}/app:v1", "--dest-creds", "carol:pw")
            auth_file = tmp_path / "config.json"
            with pytest.raises(UnauthorizedError, match="nyx login"):
                pull_to_oci_layout(f"{reg.host}/app:v1", tmp_path / "a", auth_file=auth_file)
            with pytest.raises(UnauthorizedError, match="carol"):
                login(reg.host, "carol", "wrong", auth_file)
            login(reg.host, "carol", "pw", auth_file)
            got = pull_to_oci_layout(f"{reg.host}/app:v1", tmp_path / "b", auth_file=auth_file)
    assert got.digest == layout.top_digest
    check_layout(tmp_path / "b")
    assert any(q.get("scope") == ["repository:app:pull"] for q in realm.requests)


def test_concurrent_pulls_into_one_layout(pushed: Pushed, tmp_path: Path) -> None:
    """Two pulls sharing a layout: every blob is downloaded once, both succeed."""
    from concurrent.futures import ThreadPoolExecutor

    state = ProxyState(upstream=pushed.registry.host, mode="none", blob_delay=0.1)
    with run_token_proxy(state) as (host, _), ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(pull_to_oci_layout, f"{host}/oci:v1", tmp_path) for _ in range(2)]
        results = [f.result() for f in futures]
    check_layout(tmp_path)
    assert results[0].digest == results[1].digest
    assert sum(r.downloaded for r in results) == results[0].size
    blob_gets = [p for (m, p, _) in state.requests if m == "GET" and "/blobs/" in p]
    assert len(blob_gets) == len(set(blob_gets)) == 5
    # different images at once: index.json keeps every entry
    jobs = [("schema2", AMD64), ("zstd-skopeo", "linux/riscv64"), ("multi", "linux/arm64")]
    with ThreadPoolExecutor(3) as pool:
        list(
            pool.map(lambda j: pull_to_oci_layout(pushed.ref(j[0]), tmp_path, platform=j[1]), jobs)
        )
    names = {e["annotations"]["org.opencontainers.image.ref.name"] for e in check_layout(tmp_path)}
    assert names == {f"{host}/oci:v1", *(pushed.ref(repo) for repo, _ in jobs)}


# --------------------------------------------------------------------------- credentials stay home

SECRET_PASSWORD = "s3cret-password"
SECRET_REFRESH = "r3fresh-token-secret"


@pytest.mark.parametrize("creds", ["refresh-token", "password"])
def test_token_redirect_to_another_host_gets_no_credentials(
    pushed: Pushed, tmp_path: Path, creds: str
) -> None:
    """A token realm that redirects elsewhere: the other host sees no Authorization, no
    password and no refresh token (a 307 would make a client re-send the POST body)."""
    auth_file = tmp_path / "config.json"
    other = ProxyState(upstream=pushed.registry.host, mode="none")
    with run_token_proxy(other) as (other_host, _):
        front = ProxyState(
            upstream=pushed.registry.host,
            users={"alice": SECRET_PASSWORD},
            refresh_tokens={SECRET_REFRESH},
            redirect_token_to=other_host,
        )
        with run_token_proxy(front) as (host, _):
            entry = (
                {"identitytoken": SECRET_REFRESH}
                if creds == "refresh-token"
                else {"auth": base64.b64encode(f"alice:{SECRET_PASSWORD}".encode()).decode()}
            )
            auth_file.write_text(json.dumps({"auths": {host: entry}}))
            with pytest.raises(RegistryError) as info:
                pull_to_oci_layout(f"{host}/oci:v1", tmp_path / "out", auth_file=auth_file)
    assert front.token_requests  # the realm was asked, and redirected
    seen = repr(other.requests) + repr(other.bodies)
    assert "Authorization" not in seen
    assert SECRET_REFRESH not in seen and SECRET_PASSWORD not in seen
    assert base64.b64encode(f"alice:{SECRET_PASSWORD}".encode()).decode() not in seen
    if creds == "refresh-token":
        assert "redirected" in str(info.value) and other_host in str(info.value)
        assert other.requests == []  # the POST is never re-sent anywhere


@pytest.mark.parametrize("mode", ["bearer", "basic"])
def test_blob_redirect_to_another_host_gets_no_credentials(
    pushed: Pushed, tmp_path: Path, mode: str
) -> None:
    """Bearer token or basic password: a blob redirected to a CDN host goes without them."""
    auth_file = tmp_path / "config.json"
    cdn = ProxyState(upstream=pushed.registry.host, mode="none")
    with run_token_proxy(cdn) as (cdn_host, _):
        front = ProxyState(
            upstream=pushed.registry.host,
            mode=mode,
            users={"bob": SECRET_PASSWORD},
            redirect_blobs_to=cdn_host,
        )
        with run_token_proxy(front) as (host, _):
            basic = base64.b64encode(f"bob:{SECRET_PASSWORD}".encode()).decode()
            auth_file.write_text(json.dumps({"auths": {host: {"auth": basic}}}))
            got = pull_to_oci_layout(f"{host}/oci:v1", tmp_path, auth_file=auth_file)
    check_layout(tmp_path)
    assert got.downloaded == got.size
    assert len([p for (_, p, _) in cdn.requests if "/blobs/" in p]) == 5
    seen = repr(cdn.requests) + repr(cdn.bodies)
    assert "Authorization" not in seen and basic not in seen
    # the registry itself got them
    assert any("Authorization" in h for (_, p, h) in front.requests if "/manifests/" in p)


@pytest.mark.parametrize("mode", ["bearer", "basic"])
def test_challenge_from_a_redirect_target_is_not_followed(
    pushed: Pushed, tmp_path: Path, mode: str
) -> None:
    """The host a blob is redirected to answers 401 with a challenge of its own: nyx must
    not take its realm and send the registry's credentials there."""
    auth_file = tmp_path / "config.json"
    cdn = ProxyState(upstream=pushed.registry.host, mode="bearer")  # demands its own token
    with run_token_proxy(cdn) as (cdn_host, _):
        front = ProxyState(
            upstream=pushed.registry.host,
            mode=mode,
            users={"bob": SECRET_PASSWORD},
            redirect_blobs_to=cdn_host,
        )
        with run_token_proxy(front) as (host, _):
            basic = base64.b64encode(f"bob:{SECRET_PASSWORD}".encode()).decode()
            auth_file.write_text(json.dumps({"auths": {host: {"auth": basic}}}))
            with pytest.raises(UnauthorizedError, match="denied"):
                pull_to_oci_layout(f"{host}/oci:v1", tmp_path, auth_file=auth_file)
    assert [p for (_, p, _) in cdn.requests if "/blobs/" in p]  # it was asked for the blob
    assert cdn.token_requests == []
    seen = repr(cdn.requests) + repr(cdn.bodies)
    assert "Authorization" not in seen and basic not in seen


# --------------------------------------------------------------------------- insecure registries


@pytest.fixture
def named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[NamedRegistries]:
    """Registries under non-loopback names (``registry.test``, ``foo.localhost``) reached
    through a forward proxy that resolves those names to 127.0.0.1, and a ``certs.d``."""
    from registry_fixtures import run_forward_proxy

    import nyx_cli.registry._client as client_mod

    certs_d = tmp_path / "certs.d"
    certs_d.mkdir()
    monkeypatch.setattr(client_mod, "CERTS_DIRS", (certs_d,))
    hosts = {"registry.test": "127.0.0.1", "foo.localhost": "127.0.0.1"}
    with run_forward_proxy(hosts) as (url, seen):
        for name in ("HTTP_PROXY", "HTTPS_PROXY"):
            monkeypatch.setenv(name, url)
        for name in ("NO_PROXY", "no_proxy", "http_proxy", "https_proxy"):
            monkeypatch.delenv(name, raising=False)
        yield NamedRegistries(seen, certs_d)


@dataclass
class NamedRegistries:
    seen: list[tuple[str, str, str | None]]  # what the forward proxy was asked
    certs_d: Path

    def plain_http(self) -> list[str]:
        return [path for (method, path, _) in self.seen if method != "CONNECT"]


def test_plain_http_realm_is_refused_for_a_tls_registry(
    pushed: Pushed, tmp_path: Path, named: NamedRegistries
) -> None:
    """A TLS registry whose challenge names an ``http://`` realm: refused before anything is
    sent there, unless nyxd is configured to treat that registry as insecure."""
    from registry_fixtures import self_signed_cert

    cert, key = self_signed_cert(tmp_path / "pki", names=("registry.test",))
    state = ProxyState(upstream=pushed.registry.host)
    with run_token_proxy(state) as (plain, _), run_token_proxy(state, tls=(cert, key)) as (tls, _):
        name = f"registry.test:{tls.rpartition(':')[2]}"
        (named.certs_d / name).mkdir()
        (named.certs_d / name / "ca.crt").write_bytes(cert.read_bytes())
        state.realm = f"http://registry.test:{plain.rpartition(':')[2]}/token"
        with pytest.raises(RegistryError, match="plain-HTTP token realm") as info:
            pull_to_oci_layout(f"{name}/oci:v1", tmp_path / "a")
        assert f"--insecure-registry {name}" in str(info.value)
        assert state.token_requests == [] and named.plain_http() == []
        # configured insecure: the same realm is used
        got = pull_to_oci_layout(f"{name}/oci:v1", tmp_path / "b", insecure_registries=[name])
    check_layout(tmp_path / "b")
    assert got.downloaded == got.size
    assert state.token_requests and named.plain_http()[0].startswith(state.realm)


def test_tls_registry_never_redirects_nyx_to_plain_http(
    pushed: Pushed, tmp_path: Path, named: NamedRegistries
) -> None:
    """A TLS registry whose blobs redirect to ``http://``: not followed (tag manifests and
    tokens would otherwise be open to anyone on the path), unless configured insecure."""
    from registry_fixtures import self_signed_cert

    cert, key = self_signed_cert(tmp_path / "pki", names=("registry.test",))
    cdn = ProxyState(upstream=pushed.registry.host, mode="none")
    with run_token_proxy(cdn) as (cdn_host, _):
        front = ProxyState(upstream=pushed.registry.host, redirect_blobs_to=cdn_host)
        with run_token_proxy(front, tls=(cert, key)) as (tls, _):
            name = f"registry.test:{tls.rpartition(':')[2]}"
            front.realm = f"https://{name}/token"
            (named.certs_d / name).mkdir()
            (named.certs_d / name / "ca.crt").write_bytes(cert.read_bytes())
            with pytest.raises(RegistryError, match="refusing plain HTTP") as info:
                pull_to_oci_layout(f"{name}/oci:v1", tmp_path / "a")
            assert f"http://{cdn_host}/" in str(info.value)
            assert cdn.requests == []
            pull_to_oci_layout(f"{name}/oci:v1", tmp_path / "b", insecure_registries=[name])
    check_layout(tmp_path / "b")
    assert len(cdn.requests) == 5


def test_certs_d_ca_and_client_certificate(
    pushed: Pushed, tmp_path: Path, named: NamedRegistries
) -> None:
    """``certs.d/<host:port>/``: ``*.crt`` CAs are trusted, ``client.cert`` + ``client.key``
    is presented to a registry that demands a client certificate (docker's layout)."""
    from registry_fixtures import self_signed_cert

    cert, key = self_signed_cert(tmp_path / "server", names=("registry.test",))
    client_cert, client_key = self_signed_cert(tmp_path / "client")
    state = ProxyState(upstream=pushed.registry.host, mode="none")
    with run_token_proxy(state, tls=(cert, key), client_ca=client_cert) as (tls, _):
        name = f"registry.test:{tls.rpartition(':')[2]}"
        with pytest.raises(RegistryError, match="certificate"):
            pull_to_oci_layout(f"{name}/oci:v1", tmp_path / "a")  # CA unknown
        certs = named.certs_d / name
        certs.mkdir()
        (certs / "ca.crt").write_bytes(cert.read_bytes())
        with pytest.raises(RegistryError, match="cannot reach"):
            pull_to_oci_layout(f"{name}/oci:v1", tmp_path / "b")  # no client certificate
        (certs / "client.cert").write_bytes(client_cert.read_bytes())
        (certs / "client.key").write_bytes(client_key.read_bytes())
        got = pull_to_oci_layout(f"{name}/oci:v1", tmp_path / "c")
    check_layout(tmp_path / "c")
    assert got.downloaded == got.size
    assert named.plain_http() == []


class _Images:
    """The image store end of a pull: checks the layout nyxd pulled into."""

    def __init__(self) -> None:
        self.checked: list[Path] = []

    def import_oci_layout(self, layout: Path, reference: str) -> object:
        import os
        import stat
        import subprocess

        bad = [
            (str(p), oct(stat.S_IMODE(p.stat().st_mode)))
            for p in [layout, *layout.rglob("*")]
            if stat.S_IMODE(p.stat().st_mode) & 0o077
        ]
        assert not bad, bad
        assert stat.S_IMODE(layout.stat().st_mode) == 0o700
        blob = next(p for p in layout.rglob("*") if p.is_file() and p.parent.name == "sha256")
        assert stat.S_IMODE(blob.stat().st_mode) == 0o600
        # another local user can neither list the layout nor read a blob
        for cmd in (["ls", str(layout)], ["cat", str(blob)]):
            proc = subprocess.run(cmd, user=65534, group=65534, capture_output=True, check=False)
            assert proc.returncode != 0, cmd
        assert os.path.basename(layout).startswith("pull-")
        self.checked.append(layout)

        class Img:
            id = "sha256:" + "ab" * 32
            repo_tags = [reference]

        return Img()


def _supervisor(tmp_path: Path, images: _Images, insecure_registries: tuple[str, ...] = ()) -> Any:
    """A real Supervisor whose host collaborators other than the image store are unused."""
    from nyx_cli.daemon._supervisor import Host, Supervisor
    from nyx_core import NetworkBackend, hookimpl, make_plugin_manager

    class Inert:  # the pull path never touches the network driver
        @hookimpl
        def nyx_backend_ensure_network(self) -> Any:
            return True

        @hookimpl
        def nyx_backend_setup(self) -> Any:
            raise AssertionError("no setup in a pull")

        @hookimpl
        def nyx_backend_teardown(self) -> Any:
            return True

    settings = DaemonSettings(
        state_dir=tmp_path / "state",
        run_dir=tmp_path / "run",
        socket=tmp_path / "run" / "nyxd.sock",
        insecure_registries=insecure_registries,
    )
    pm = make_plugin_manager()
    pm.register(Inert())
    unused = object()
    host = Host(
        images=images,  # type: ignore[arg-type]
        rootfs=unused,  # type: ignore[arg-type]
        runtime=unused,  # type: ignore[arg-type]
        process_from_image=lambda *a: None,
        create_netns=lambda p: None,
        delete_netns=lambda p: None,
    )
    return Supervisor(settings, NetworkBackend(pm, "fake"), None, host)


@pytest.mark.parametrize("hostname", ["registry.test", "foo.localhost"])
def test_insecure_is_nyxds_configuration_not_the_callers(
    pushed: Pushed, tmp_path: Path, named: NamedRegistries, hostname: str
) -> None:
    """``insecure=True`` from the API for a registry nyxd was not started with is refused
    (4xx, naming the registry and the flag) before any traffic; without it a plain-HTTP
    registry is only tried over TLS; ``--insecure-registry`` makes it work."""
    from nyx_cli.daemon._api import error_status
    from nyx_core.errors import ConfigError

    port = pushed.registry.port
    name = f"{hostname}:{port}"
    ref = f"{name}/oci:v1"
    images = _Images()
    sup = _supervisor(tmp_path / "a", images)
    with pytest.raises(ConfigError) as info:
        sup.pull_image(ref, insecure=True)
    assert name in str(info.value) and "--insecure-registry" in str(info.value)
    assert 400 <= error_status(info.value) < 500
    assert named.seen == []  # nothing was contacted at all
    with pytest.raises(RegistryError, match="cannot reach"):
        sup.pull_image(ref)  # TLS only: the plain-HTTP registry fails the handshake
    assert named.plain_http() == [] and {m for (m, _, _) in named.seen} == {"CONNECT"}
    assert images.checked == []
    assert [p.name for p in (tmp_path / "a/state/tmp").iterdir()] == []  # cleaned up

    configured = _supervisor(tmp_path / "b", images, insecure_registries=(name,))
    for insecure in (True, False):  # the configuration decides, the flag may say so too
        got = configured.pull_image(ref, insecure=insecure)
        assert got["repo_tags"] == [ref]
    assert f"http://{name}/v2/" in named.plain_http()
    assert len(images.checked) == 2 and not any(p.exists() for p in images.checked)
