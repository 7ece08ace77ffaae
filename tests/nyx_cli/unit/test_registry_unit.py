"""Registry client pieces that need no registry: challenges, auth file, platforms, layers."""

from __future__ import annotations

import base64
import gzip
import io
import json
import stat
import urllib.parse
from pathlib import Path

import pytest

from nyx_cli.errors import NoMatchingPlatformError, RegistryError, UnsupportedCompressionError
from nyx_cli.images._compression import (
    compression_for_media_type,
    decompressed_stream,
    detect_compression,
)
from nyx_cli.registry._auth import (
    DOCKER_HUB_CONFIG_KEY,
    Credentials,
    credential_helper_configured,
    load_credentials,
    parse_www_authenticate,
    store_credentials,
)
from nyx_cli.registry._client import _no_proxy_match, proxy_for
from nyx_cli.registry._layout import descriptor
from nyx_cli.registry._platform import (
    Platform,
    host_platform,
    normalize_arch,
    parse_platform,
    select_platform_manifest,
)
from nyx_cli.registry._pull import is_insecure_registry as _insecure
from nyx_core.errors import ConfigError

# --------------------------------------------------------------------------- challenges


def test_bearer_challenge() -> None:
    header = (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/nginx:pull"'
    )
    [c] = parse_www_authenticate(header)
    assert c.scheme == "bearer"
    assert c.realm == "https://auth.docker.io/token"
    assert c.params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/nginx:pull",
    }


def test_challenge_quoting_spaces_and_case() -> None:
    [c] = parse_www_authenticate(
        'BEARER  Realm = "http://127.0.0.1:1/token" , scope="repository:a:pull,push" ,'
        ' error="insufficient_scope"'
    )
    assert c.scheme == "bearer"
    assert c.params["realm"] == "http://127.0.0.1:1/token"
    assert c.params["scope"] == "repository:a:pull,push"  # comma inside quotes kept
    assert c.params["error"] == "insufficient_scope"


def test_quoted_escapes() -> None:
    [c] = parse_www_authenticate(r'Basic realm="a \"quoted\" realm\\"')
    assert c.params["realm"] == 'a "quoted" realm\\'


def test_several_challenges_and_token68() -> None:
    got = parse_www_authenticate('Basic dXNlcjpwYXNz==, Bearer realm="r",service=s, Negotiate')
    assert [c.scheme for c in got] == ["basic", "bearer", "negotiate"]
    assert got[0].params == {"": "dXNlcjpwYXNz=="}
    assert got[1].params == {"realm": "r", "service": "s"}
    assert got[2].params == {}


def test_malformed_challenge() -> None:
    with pytest.raises(ValueError):
        parse_www_authenticate('Bearer realm="unterminated')
    with pytest.raises(ValueError):
        parse_www_authenticate("=oops")


# --------------------------------------------------------------------------- auth file


def _write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_load_credentials_by_any_key_spelling(tmp_path: Path) -> None:
    cfg = _write(
        tmp_path / "config.json",
        {
            "auths": {
                DOCKER_HUB_CONFIG_KEY: {"auth": _auth("hubuser", "hub:pass")},
                "https://reg.example.com:5000/v2/": {"auth": _auth("u", "p")},
                "plain.example": {"username": "pu", "password": "pp"},
                "tok.example": {"identitytoken": "refresh-me"},
            }
        },
    )
    hub = load_credentials("docker.io", cfg)
    assert hub == Credentials("hubuser", "hub:pass")  # password may contain ':'
    assert load_credentials("reg.example.com:5000", cfg) == Credentials("u", "p")
    assert load_credentials("plain.example", cfg) == Credentials("pu", "pp")
    tok = load_credentials("tok.example", cfg)
    assert tok is not None and tok.identity_token == "refresh-me"
    assert load_credentials("other.example", cfg) is None
    assert load_credentials("docker.io", tmp_path / "missing.json") is None
    assert "hub:pass" not in repr(hub)


def test_credentials_basic_header() -> None:
    assert Credentials("u", "p").basic_header() == "Basic " + _auth("u", "p")
    assert Credentials().basic_header() is None


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "top level"),
        ('{"auths": []}', "'auths' must be an object"),
        ('{"auths": {"h.example": {"auth": "%%%"}}}', "not base64"),
        (
            '{"auths": {"h.example": {"auth": "' + base64.b64encode(b"nocolon").decode() + '"}}}',
            "user:password",
        ),
    ],
)
def test_bad_auth_file(tmp_path: Path, content: str, fragment: str) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text(content)
    with pytest.raises(ConfigError, match=fragment) as info:
        load_credentials("h.example", cfg)
    assert str(cfg) in str(info.value)


def test_default_auth_file_follows_docker_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    _write(tmp_path / "config.json", {"auths": {"r.example": {"auth": _auth("a", "b")}}})
    assert load_credentials("r.example") == Credentials("a", "b")


def test_store_credentials_keeps_other_keys(tmp_path: Path) -> None:
    cfg = _write(
        tmp_path / "config.json",
        {
            "auths": {
                "keep.example": {"auth": _auth("k", "k")},
                "https://r.example/v1/": {"auth": _auth("old", "old")},
            },
            "psFormat": "table",
        },
    )
    store_credentials("r.example", "new", "secret", cfg)
    data = json.loads(cfg.read_text())
    assert data["psFormat"] == "table"
    assert data["auths"]["keep.example"] == {"auth": _auth("k", "k")}
    assert data["auths"]["r.example"] == {"auth": _auth("new", "secret")}
    assert "https://r.example/v1/" not in data["auths"]  # one entry per registry
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    assert load_credentials("r.example", cfg) == Credentials("new", "secret")


def test_store_hub_credentials_under_docker_key(tmp_path: Path) -> None:
    cfg = tmp_path / "new" / "config.json"
    store_credentials("docker.io", "me", "pw", cfg)
    assert json.loads(cfg.read_text())["auths"] == {
        DOCKER_HUB_CONFIG_KEY: {"auth": _auth("me", "pw")}
    }
    assert stat.S_IMODE(cfg.parent.stat().st_mode) == 0o700


def test_credential_helper_detection(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "c.json", {"credHelpers": {"gcr.io": "gcloud"}})
    assert credential_helper_configured("gcr.io", cfg)
    assert not credential_helper_configured("quay.io", cfg)
    _write(cfg, {"credsStore": "desktop"})
    assert credential_helper_configured("quay.io", cfg)


# --------------------------------------------------------------------------- platforms


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        ("x86_64", "linux/amd64"),
        ("aarch64", "linux/arm64/v8"),
        ("arm64", "linux/arm64/v8"),
        ("armv7l", "linux/arm/v7"),
        ("armv6l", "linux/arm/v6"),
        ("i686", "linux/386"),
        ("ppc64le", "linux/ppc64le"),
        ("s390x", "linux/s390x"),
    ],
)
def test_host_platform(machine: str, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import nyx_cli.registry._platform as plat

    monkeypatch.setattr(plat._platform, "machine", lambda: machine)
    assert str(host_platform()) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("linux/amd64", Platform("linux", "amd64")),
        ("linux/arm64", Platform("linux", "arm64", "v8")),
        ("linux/arm64/v8", Platform("linux", "arm64", "v8")),
        ("linux/arm", Platform("linux", "arm", "v7")),
        ("linux/arm/v6", Platform("linux", "arm", "v6")),
        ("linux/arm/7", Platform("linux", "arm", "v7")),
        ("arm64", Platform("linux", "arm64", "v8")),
        ("linux/x86_64", Platform("linux", "amd64")),
    ],
)
def test_parse_platform(text: str, expected: Platform) -> None:
    assert parse_platform(text) == expected


@pytest.mark.parametrize("bad", ["", "linux/", "a/b/c/d", "/amd64"])
def test_parse_platform_rejects(bad: str) -> None:
    with pytest.raises(ConfigError, match="invalid platform"):
        parse_platform(bad)


def _entry(arch: str, variant: str = "", os_name: str = "linux", n: int = 0) -> dict[str, object]:
    plat: dict[str, str] = {"os": os_name, "architecture": arch}
    if variant:
        plat["variant"] = variant
    return {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": f"sha256:{n:064x}",
        "size": 100,
        "platform": plat,
    }


INDEX = {
    "manifests": [
        _entry("unknown", os_name="unknown", n=9),  # buildkit attestation
        _entry("amd64", n=1),
        _entry("arm", "v6", n=2),
        _entry("arm", "v7", n=3),
        _entry("arm64", "v8", n=4),
        _entry("amd64", os_name="windows", n=5),
    ]
}


@pytest.mark.parametrize(
    ("want", "n"),
    [
        ("linux/amd64", 1),
        ("linux/arm64", 4),
        ("linux/arm64/v8", 4),
        ("linux/arm/v7", 3),
        ("linux/arm/v6", 2),
        ("linux/arm/v8", 3),  # falls back to the newest compatible variant
        ("windows/amd64", 5),
        ("linux/amd64/v3", 1),  # microarchitecture levels run plain amd64
    ],
)
def test_select_platform(want: str, n: int) -> None:
    chosen = select_platform_manifest(INDEX, parse_platform(want))
    assert chosen["digest"] == f"sha256:{n:064x}"


def test_select_arm64_without_variant() -> None:
    index = {"manifests": [_entry("arm64", n=7)]}
    assert select_platform_manifest(index, parse_platform("linux/arm64"))["digest"].endswith("7")


def test_no_matching_platform_lists_what_exists() -> None:
    with pytest.raises(NoMatchingPlatformError) as info:
        select_platform_manifest(INDEX, parse_platform("linux/s390x"))
    msg = str(info.value)
    assert "linux/s390x" in msg
    assert "linux/amd64" in msg and "linux/arm64/v8" in msg
    assert "unknown" not in msg
    with pytest.raises(NoMatchingPlatformError):
        select_platform_manifest({"manifests": [_entry("arm", "v6")]}, parse_platform("arm/v5"))
    with pytest.raises(RegistryError, match="no 'manifests'"):
        select_platform_manifest({}, parse_platform("linux/amd64"))


def test_normalize_arch_aliases() -> None:
    assert normalize_arch("aarch64", "") == ("arm64", "v8")
    assert normalize_arch("arm64", "8") == ("arm64", "v8")
    assert normalize_arch("amd64", "v1") == ("amd64", "")


# --------------------------------------------------------------------------- descriptors


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        ("nope", "not an object"),
        ({"digest": "sha256:xyz", "size": 1}, "bad digest"),
        ({"digest": "sha256:" + "a" * 64, "size": -1}, "bad size"),
        ({"digest": "sha256:" + "a" * 64, "size": True}, "bad size"),
        ({"digest": "sha256:" + "a" * 64}, "bad size"),
    ],
)
def test_bad_descriptor(obj: object, fragment: str) -> None:
    with pytest.raises(RegistryError, match=fragment):
        descriptor(obj, "layer 0")


# --------------------------------------------------------------------------- insecure


def test_insecure_registries() -> None:
    assert _insecure("localhost:5000", ())
    assert _insecure("127.0.0.1:5000", ())
    assert _insecure("[::1]:5000", ())
    assert not _insecure("reg.example:5000", ())
    assert _insecure("reg.example:5000", ["reg.example:5000"])
    assert _insecure("reg.example:5000", ["http://reg.example:5000/"])
    assert _insecure("reg.example:5000", ["reg.example"])  # a bare host covers its ports
    assert not _insecure("reg.example:5000", ["reg.example:6000"])
    assert _insecure("10.1.2.3:5000", ["10.0.0.0/8"])
    assert not _insecure("192.0.2.1:5000", ["10.0.0.0/8"])
    with pytest.raises(ConfigError, match="invalid insecure registry"):
        _insecure("reg.example", ["10.0.0.0/99"])
    # only exactly "localhost" is trusted by name; a CIDR never matches a name
    assert not _insecure("foo.localhost:5000", ())
    assert not _insecure("localhost.example:5000", ["127.0.0.0/8"])
    assert _insecure("foo.localhost:5000", ["foo.localhost:5000"])


def test_insecure_registries_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from nyx_cli.daemon._settings import DaemonSettings
    from nyx_core import load_settings

    monkeypatch.delenv("NYXD_INSECURE_REGISTRIES", raising=False)
    assert load_settings(DaemonSettings).insecure_registries == ()
    got = load_settings(
        DaemonSettings,
        insecure_registries=["Reg.Example:5000", "http://b.example/v2/", "10.1.0.0/16"],
    )
    assert got.insecure_registries == ("reg.example:5000", "b.example", "10.1.0.0/16")
    monkeypatch.setenv("NYXD_INSECURE_REGISTRIES", "a.example:5000, 10.0.0.0/8")
    assert load_settings(DaemonSettings).insecure_registries == ("a.example:5000", "10.0.0.0/8")
    got = load_settings(DaemonSettings, insecure_registries=["c.example"])
    assert got.insecure_registries == ("c.example",)
    for bad in ("bad host", "10.0.0.0/99", "a_b.example"):
        with pytest.raises(ConfigError, match="NYXD_INSECURE_REGISTRIES") as info:
            load_settings(DaemonSettings, insecure_registries=[bad])
        assert bad in str(info.value)


def test_nyxd_insecure_registry_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    from nyx_cli.daemon._settings import DaemonSettings
    from nyx_core import load_settings

    daemon = pytest.importorskip("nyx_cli.daemon")
    monkeypatch.setenv("NYXD_INSECURE_REGISTRIES", "from-env.example")

    def settings(*argv: str) -> tuple[str, ...]:
        flags, _plugins = daemon.parse(list(argv))
        return load_settings(DaemonSettings, **flags).insecure_registries

    assert settings() == ("from-env.example",)  # no flag: the env var
    assert settings("--insecure-registry", "a.example:5000", "--insecure-registry=10.0.0.0/8") == (
        "a.example:5000",
        "10.0.0.0/8",
    )
    cmd = daemon.nyxd([])
    text = cmd.get_help(cmd.make_context("nyxd", []))
    assert "--insecure-registry" in text and "HOST[:PORT]" in text


# --------------------------------------------------------------------------- compression


DATA = b"layer tar bytes " * 500


def test_media_types() -> None:
    assert compression_for_media_type("application/vnd.oci.image.layer.v1.tar+gzip") == "gzip"
    assert compression_for_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip") == "gzip"
    assert compression_for_media_type("application/vnd.oci.image.layer.v1.tar+zstd") == "zstd"
    assert compression_for_media_type("application/vnd.oci.image.layer.v1.tar") == "none"
    assert compression_for_media_type("application/octet-stream") is None


def test_detect_compression() -> None:
    assert detect_compression(gzip.compress(b"x")[:4]) == "gzip"
    assert detect_compression(b"\x28\xb5\x2f\xfd") == "zstd"
    assert detect_compression(b"ustar") == "none"
    assert detect_compression(b"") == "none"


def test_gzip_and_plain_streams() -> None:
    gz = gzip.compress(DATA)
    assert (
        decompressed_stream(io.BytesIO(gz), "application/vnd.oci.image.layer.v1.tar+gzip").read()
        == DATA
    )
    assert (
        decompressed_stream(io.BytesIO(DATA), "application/vnd.oci.image.layer.v1.tar").read()
        == DATA
    )
    # mislabelled or unlabelled blobs are read by their magic bytes
    assert (
        decompressed_stream(io.BytesIO(gz), "application/vnd.oci.image.layer.v1.tar").read() == DATA
    )
    assert decompressed_stream(io.BytesIO(gz), "application/octet-stream").read() == DATA


class _NonSeekable(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        return self._buf.readinto(b)


def test_non_seekable_stream_keeps_its_head() -> None:
    raw = _NonSeekable(gzip.compress(DATA))
    assert decompressed_stream(raw, "").read() == DATA  # type: ignore[arg-type]
    assert decompressed_stream(_NonSeekable(DATA), "").read() == DATA  # type: ignore[arg-type]


def test_zstd_stream() -> None:
    zstandard = pytest.importorskip("zstandard")
    blob = zstandard.ZstdCompressor().compress(DATA)
    out = decompressed_stream(io.BytesIO(blob), "application/vnd.oci.image.layer.v1.tar+zstd")
    assert out.read() == DATA


def test_zstd_without_package_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "zstandard", None)  # import fails
    with pytest.raises(UnsupportedCompressionError, match="zstandard"):
        decompressed_stream(
            io.BytesIO(b"\x28\xb5\x2f\xfd0000"), "application/vnd.oci.image.layer.v1.tar+zstd"
        )


def test_unsupported_compression() -> None:
    with pytest.raises(UnsupportedCompressionError, match=r"\+bzip2"):
        decompressed_stream(io.BytesIO(b"BZh9"), "application/vnd.oci.image.layer.v1.tar+bzip2")


# --------------------------------------------------------------------------- proxies


def _split(url: str) -> urllib.parse.SplitResult:
    return urllib.parse.urlsplit(url)


@pytest.mark.parametrize(
    ("url", "no_proxy", "bypass"),
    [
        ("https://reg.example.com/v2/", "", False),
        ("https://reg.example.com/v2/", "*", True),
        ("https://reg.example.com/v2/", "example.com", True),
        ("https://reg.example.com/v2/", ".example.com", True),
        ("https://reg.example.com/v2/", "other.com, reg.example.com", True),
        ("https://notexample.com/v2/", "example.com", False),
        ("https://reg.example.com:5000/v2/", "reg.example.com:5000", True),
        ("https://reg.example.com:5000/v2/", "reg.example.com:6000", False),
        ("https://10.1.2.3:5000/v2/", "10.0.0.0/8", True),
        ("https://192.0.2.1/v2/", "10.0.0.0/8", False),
    ],
)
def test_no_proxy(url: str, no_proxy: str, bypass: bool) -> None:
    assert _no_proxy_match(_split(url), no_proxy) is bypass


def test_proxy_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert proxy_for(_split("https://reg.example.com/v2/")) is None
    monkeypatch.setenv("HTTPS_PROXY", "proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "internal.corp")
    got = proxy_for(_split("https://reg.example.com/v2/"))
    assert got is not None and (got.hostname, got.port) == ("proxy.corp", 3128)
    assert proxy_for(_split("http://reg.example.com/v2/")) is None  # no HTTP_PROXY
    assert proxy_for(_split("https://reg.internal.corp/v2/")) is None
    assert proxy_for(_split("https://127.0.0.1:5000/v2/")) is None  # loopback never
    assert proxy_for(_split("https://localhost:5000/v2/")) is None
    monkeypatch.setenv("HTTPS_PROXY", "socks5://proxy.corp:1080")
    with pytest.raises(RegistryError, match="unsupported proxy"):
        proxy_for(_split("https://reg.example.com/v2/"))
