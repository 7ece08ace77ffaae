"""Image reference normalisation follows docker's rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nyx_cli.errors import InvalidReferenceError
from nyx_cli.registry._reference import (
    is_loopback_registry,
    normalize_reference,
    normalize_registry,
)
from nyx_core.errors import ConfigError, NyxError

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("nginx", "docker.io/library/nginx:latest"),
        ("nginx:alpine", "docker.io/library/nginx:alpine"),
        ("library/nginx:1.25", "docker.io/library/nginx:1.25"),
        ("docker.io/nginx", "docker.io/library/nginx:latest"),
        ("index.docker.io/library/nginx:x", "docker.io/library/nginx:x"),
        ("registry-1.docker.io/user/app", "docker.io/user/app:latest"),
        ("user/app:v1.2-rc_3", "docker.io/user/app:v1.2-rc_3"),
        ("user/app/sub:1", "docker.io/user/app/sub:1"),
        ("quay.io/coreos/etcd:v3", "quay.io/coreos/etcd:v3"),
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
        ("127.0.0.1:5000/a/b:t", "127.0.0.1:5000/a/b:t"),
        ("[::1]:5000/app:t", "[::1]:5000/app:t"),
        ("myhost:443/app", "myhost:443/app:latest"),
        (f"nginx@{DIGEST}", f"docker.io/library/nginx@{DIGEST}"),
        (f"nginx:alpine@{DIGEST}", f"docker.io/library/nginx:alpine@{DIGEST}"),
        (f"host:5000/app@{DIGEST}", f"host:5000/app@{DIGEST}"),
        ("a__b/c-d.e--f:1", "docker.io/a__b/c-d.e--f:1"),
        ("localhost:5000", "docker.io/library/localhost:5000"),  # docker reads a tag here
    ],
)
def test_normalize(given: str, expected: str) -> None:
    assert str(normalize_reference(given)) == expected


def test_parts_and_api_host() -> None:
    ref = normalize_reference("nginx:alpine")
    assert (ref.domain, ref.path, ref.tag, ref.digest) == (
        "docker.io",
        "library/nginx",
        "alpine",
        None,
    )
    assert ref.api_host == "registry-1.docker.io"
    assert ref.object == "alpine"
    assert ref.familiar == "nginx:alpine"
    pinned = normalize_reference(f"localhost:5000/app:1@{DIGEST}")
    assert pinned.api_host == "localhost:5000"
    assert pinned.object == DIGEST  # the digest wins over the tag
    assert pinned.name == "localhost:5000/app"
    assert normalize_reference("user/app").familiar == "user/app:latest"


@pytest.mark.parametrize(
    ("given", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("Nginx", "lowercase"),
        ("docker.io/Library/nginx", "lowercase"),
        ("nginx:", "bad tag"),
        ("nginx:-bad", "bad tag"),
        ("nginx:" + "a" * 129, "bad tag"),
        ("nginx@sha256:abc", "bad digest"),
        ("nginx@sha256:" + "AB" * 32, "lowercase"),
        ("nginx@md5:" + "ab" * 16, "unsupported digest algorithm"),
        ("nginx@sha256:" + "ab" * 33, "64 hex digits"),
        ("a" * 64, "64-character hex"),
        ("ngi nx", "whitespace"),
        ("host:5000/", "missing repository path"),
        ("foo//bar", "bad characters"),
        ("foo/bar_", "bad characters"),
        ("foo/-bar", "bad characters"),
        ("bad_host.com:x/app", "bad registry host"),
        ("example.com/" + "a" * 250, "longer than 255"),
        (":tag", "missing repository name"),
    ],
)
def test_invalid_references_name_the_reference(given: str, fragment: str) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        normalize_reference(given)
    msg = str(info.value)
    assert fragment in msg
    assert repr(given.strip() if given.strip() else given) in msg or "empty" in msg
    assert isinstance(info.value, NyxError)
    assert isinstance(info.value, ConfigError)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("docker.io", "docker.io"),
        ("https://index.docker.io/v1/", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("Example.COM:5000", "example.com:5000"),
        ("http://localhost:5000/v2/", "localhost:5000"),
        ("[::1]:5000", "[::1]:5000"),
    ],
)
def test_normalize_registry(given: str, expected: str) -> None:
    assert normalize_registry(given) == expected


@pytest.mark.parametrize("bad", ["", "https://", "bad host", "a_b.com"])
def test_normalize_registry_rejects(bad: str) -> None:
    with pytest.raises(InvalidReferenceError, match="invalid registry"):
        normalize_registry(bad)


@pytest.mark.parametrize(
    ("domain", "loopback"),
    [
        ("localhost", True),
        ("localhost:5000", True),
        ("127.0.0.1:5000", True),
        ("127.1.2.3", True),
        ("[::1]:5000", True),
        ("10.0.0.1:5000", False),
        ("docker.io", False),
        ("localhost.example.com", False),
        ("128.0.0.1", False),
        ("LOCALHOST:5000", True),
        ("[::ffff:127.0.0.1]:5000", True),
        # a name under .localhost goes to the resolver like any other: not trusted by name
        ("foo.localhost", False),
        ("foo.localhost:5000", False),
        ("0.0.0.0:5000", False),
    ],
)
def test_loopback_registries(domain: str, loopback: bool) -> None:
    assert is_loopback_registry(domain) is loopback


_component = st.from_regex(r"[a-z0-9]{1,5}(?:[._-][a-z0-9]{1,4}){0,2}", fullmatch=True)
_tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
_domain = st.sampled_from(["", "docker.io/", "localhost:5000/", "quay.io/", "[::1]:5000/"])


@given(
    domain=_domain,
    path=st.lists(_component, min_size=1, max_size=3),
    tag=st.none() | _tag,
    digest=st.none() | st.from_regex(r"sha256:[a-f0-9]{64}", fullmatch=True),
)
def test_normalisation_is_idempotent(
    domain: str, path: list[str], tag: str | None, digest: str | None
) -> None:
    text = domain + "/".join(path)
    if tag:
        text += f":{tag}"
    if digest:
        text += f"@{digest}"
    try:
        ref = normalize_reference(text)
    except InvalidReferenceError as exc:
        # docker reads a first component with a '.' as a registry host, and '_' is not
        # allowed in host names
        assert not domain and len(path) > 1 and "." in path[0] and "_" in path[0], exc
        return
    again = normalize_reference(str(ref))
    assert again == ref
    assert ref.digest == digest
    assert ref.tag == (tag or (None if digest else "latest"))
    assert str(ref).endswith(
        "/".join(path) + (f":{ref.tag}" if ref.tag else "") + (f"@{digest}" if digest else "")
    )


@given(st.text(max_size=60))
def test_parsing_never_crashes(text: str) -> None:
    try:
        ref = normalize_reference(text)
    except InvalidReferenceError as exc:
        assert "invalid image reference" in str(exc)
    else:
        assert normalize_reference(str(ref)) == ref
