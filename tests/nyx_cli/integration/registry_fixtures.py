"""Test support for the registry client: a real ``docker-registry`` on loopback, tiny images
built with :mod:`tarfile` and pushed with ``skopeo``, and a bearer-token proxy.

Imported by ``test_registry.py`` (the conftest belongs to another owner).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import gzip
import hashlib
import http.client
import http.server
import io
import json
import os
import select
import shutil
import signal
import socket
import ssl
import subprocess
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TYPES = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "none": "application/vnd.oci.image.layer.v1.tar",
}
REGISTRY_BIN = "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def compress(data: bytes, kind: str) -> bytes:
    if kind == "gzip":
        return gzip.compress(data, mtime=0)
    if kind == "zstd":
        import zstandard

        return bytes(zstandard.ZstdCompressor().compress(data))
    return data


@dataclass
class BuiltImage:
    manifest: bytes
    config: bytes
    layers: list[bytes]  # compressed blobs
    tars: list[bytes]  # uncompressed
    arch: str
    variant: str = ""

    @property
    def manifest_digest(self) -> str:
        return sha256(self.manifest)


@dataclass
class Layout:
    path: Path
    images: list[BuiltImage] = field(default_factory=list)
    index: bytes | None = None  # the image index blob, multi-arch only

    @property
    def top_digest(self) -> str:
        return sha256(self.index) if self.index is not None else self.images[0].manifest_digest


def _write_blob(root: Path, data: bytes) -> str:
    digest = sha256(data)
    path = root / "blobs" / "sha256" / digest.split(":", 1)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def build_image(
    root: Path,
    arch: str,
    *,
    variant: str = "",
    compression: str = "gzip",
    layers: int = 1,
    layer_bytes: int = 0,
) -> BuiltImage:
    tars: list[bytes] = []
    blobs: list[bytes] = []
    for i in range(layers):
        files = {f"layer{i}/hello-{arch}.txt": f"hello from {arch} layer {i}\n".encode()}
        if layer_bytes:
            # incompressible payload so the blob is big enough to interrupt mid-way
            files[f"layer{i}/payload.bin"] = hashlib.shake_256(f"{arch}{i}".encode()).digest(
                layer_bytes
            )
        tar = layer_tar(files)
        tars.append(tar)
        blobs.append(compress(tar, compression))
    config_obj: dict[str, Any] = {
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256(t) for t in tars]},
    }
    if variant:
        config_obj["variant"] = variant
    config = json.dumps(config_obj, sort_keys=True).encode()
    manifest_obj = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [
            {"mediaType": LAYER_TYPES[compression], "digest": sha256(b), "size": len(b)}
            for b in blobs
        ],
    }
    manifest = json.dumps(manifest_obj, sort_keys=True).encode()
    for data in (config, *blobs, manifest):
        _write_blob(root, data)
    return BuiltImage(manifest, config, blobs, tars, arch, variant)


def build_layout(
    root: Path,
    tag: str,
    arches: list[tuple[str, str]],
    *,
    compression: str = "gzip",
    layers: int = 1,
    layer_bytes: int = 0,
) -> Layout:
    """An OCI layout ``root`` with one image per (arch, variant); an index when several."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    images = [
        build_image(
            root, a, variant=v, compression=compression, layers=layers, layer_bytes=layer_bytes
        )
        for a, v in arches
    ]
    index_blob: bytes | None = None
    if len(images) == 1:
        top = {"mediaType": OCI_MANIFEST, "digest": images[0].manifest_digest}
        top["size"] = len(images[0].manifest)  # type: ignore[assignment]
    else:
        entries = []
        for img in images:
            plat = {"os": "linux", "architecture": img.arch}
            if img.variant:
                plat["variant"] = img.variant
            entries.append(
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": img.manifest_digest,
                    "size": len(img.manifest),
                    "platform": plat,
                }
            )
        index_blob = json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, sort_keys=True
        ).encode()
        _write_blob(root, index_blob)
        top = {"mediaType": OCI_INDEX, "digest": sha256(index_blob), "size": len(index_blob)}
    top["annotations"] = {"org.opencontainers.image.ref.name": tag}  # type: ignore[assignment]
    (root / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "manifests": [top]}, sort_keys=True)
    )
    return Layout(root, images, index_blob)


def skopeo_push(layout: Path, tag: str, dest: str, *extra: str) -> None:
    cmd = [
        "skopeo",
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        *extra,
        f"oci:{layout}:{tag}",
        f"docker://{dest}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")


def http_push(layout: Layout, host: str, repo: str, tag: str) -> None:
    """Push a single-image layout with plain registry API calls, blobs byte for byte
    (skopeo would compress uncompressed layers on the way)."""
    image = layout.images[0]

    def call(method: str, url: str, body: bytes = b"", ctype: str = "") -> http.client.HTTPResponse:
        parts = urllib.parse.urlsplit(url)
        conn = http.client.HTTPConnection(host, timeout=30)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = {"Content-Length": str(len(body))}
        if ctype:
            headers["Content-Type"] = ctype
        conn.request(method, target, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        conn.close()
        return resp

    for blob in (image.config, *image.layers):
        resp = call("POST", f"/v2/{repo}/blobs/uploads/")
        assert resp.status == 202, resp.status
        location = resp.headers["Location"]
        sep = "&" if "?" in location else "?"
        done = call(
            "PUT", f"{location}{sep}digest={sha256(blob)}", blob, "application/octet-stream"
        )
        assert done.status == 201, done.status
    put = call("PUT", f"/v2/{repo}/manifests/{tag}", image.manifest, OCI_MANIFEST)
    assert put.status == 201, put.status


@dataclass
class Registry:
    """A running ``docker-registry`` on 127.0.0.1."""

    port: int
    root: Path  # storage root directory
    proc: subprocess.Popen[bytes]

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def blob_data_path(self, digest: str) -> Path:
        hexd = digest.split(":", 1)[1]
        return self.root / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"


def self_signed_cert(workdir: Path, names: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (and DNS ``names``) made with the openssl CLI: (cert, key)."""
    if shutil.which("openssl") is None:
        import pytest

        pytest.skip("needs the openssl CLI to make a test certificate")
    workdir.mkdir(parents=True, exist_ok=True)
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=" + ",".join(["IP:127.0.0.1", *(f"DNS:{n}" for n in names)]),
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


def _die_with_parent() -> None:
    """In the child: SIGKILL when the test process dies, even if it is killed itself."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def run_registry(
    workdir: Path, *, tls: bool = False, token_auth: dict[str, str] | None = None
) -> Iterator[Registry]:
    """``token_auth``: realm, service, issuer, rootcertbundle of the registry's token auth."""
    port = free_port()
    storage = workdir / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    config = workdir / "registry.yml"
    tls_config = ""
    auth_config = ""
    if token_auth:
        auth_config = "auth:\n  token:\n" + "".join(
            f"    {k}: {v}\n" for k, v in token_auth.items()
        )
    if tls:
        cert, key = self_signed_cert(workdir)
        tls_config = f"  tls:\n    certificate: {cert}\n    key: {key}\n"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n" + tls_config + auth_config
    )
    log = open(workdir / "registry.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [REGISTRY_BIN, "serve", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"docker-registry exited: {(workdir / 'registry.log').read_text()}"
                )
            with contextlib.suppress(OSError):
                conn: http.client.HTTPConnection
                if tls:
                    ctx = ssl._create_unverified_context()
                    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=2, context=ctx)
                else:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/v2/")
                if conn.getresponse().status in (200, 401):
                    conn.close()
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("docker-registry did not start")
            time.sleep(0.05)
        yield Registry(port, storage, proc)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        log.close()


# --------------------------------------------------------------------------- token proxy


@dataclass
class ProxyState:
    """What the proxy enforces and what it saw."""

    upstream: str
    users: dict[str, str] = field(default_factory=dict)  # empty: anonymous tokens allowed
    mode: str = "bearer"  # "bearer" | "basic" | "none"
    tokens: dict[str, str] = field(default_factory=dict)  # token -> granted scope
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    token_requests: list[dict[str, list[str]]] = field(default_factory=list)
    # per-path hooks: return bytes to replace the body, or a cut-off length
    cut_blob_after: dict[str, int] = field(default_factory=dict)  # digest -> bytes, once
    corrupt_blob: set[str] = field(default_factory=set)
    ignore_range: bool = False
    redirect_blobs_to: str = ""  # host:port a blob GET is redirected to (a "CDN")
    redirect_token_to: str = ""  # host:port every /token request is redirected to (307)
    realm: str = ""  # the token realm the challenge names (default: this server's /token)
    refresh_tokens: set[str] = field(default_factory=set)  # accepted in a token POST
    bodies: list[tuple[str, str, bytes]] = field(default_factory=list)  # (method, path, body)
    blob_delay: float = 0.0  # seconds each blob response waits (to observe parallelism)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _check_basic(state: ProxyState, header: str) -> str | None:
    if not header.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except ValueError:
        return None
    return user if state.users.get(user) == password and user else None


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: _ProxyServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _unauthorized(self, scope: str) -> None:
        st = self.server.state
        if st.mode == "basic":
            challenge = 'Basic realm="nyx-test"'
        else:
            realm = st.realm or f"{self.server.scheme}://127.0.0.1:{self.server.server_port}/token"
            challenge = f'Bearer realm="{realm}",service="nyx-test-registry"'
            if scope:
                challenge += f',scope="{scope}"'
        body = json.dumps(
            {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
        ).encode()
        self._send(401, body, {"WWW-Authenticate": challenge, "Content-Type": "application/json"})

    def _token(self, body: bytes) -> None:
        st = self.server.state
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        if self.command == "POST":  # OAuth2 refresh-token grant: the form is the query
            query = {**query, **urllib.parse.parse_qs(body.decode("utf-8", "replace"))}
        with st.lock:
            st.token_requests.append(query)
        if st.redirect_token_to:
            location = f"{self.server.scheme}://{st.redirect_token_to}{self.path}"
            self._send(307, b"", {"Location": location})
            return
        auth = self.headers.get("Authorization", "")
        refresh = query.get("refresh_token", [""])[0]
        if self.command == "POST" and refresh not in st.refresh_tokens:
            self._send(401, b'{"details":"invalid refresh token"}')
            return
        if self.command == "GET" and (auth or st.users) and _check_basic(st, auth) is None:
            self._send(401, b'{"details":"incorrect username or password"}')
            return
        scope = " ".join(query.get("scope", []))
        token = base64.urlsafe_b64encode(os.urandom(18)).decode()
        with st.lock:
            st.tokens[token] = scope
        self._send(
            200,
            json.dumps({"token": token, "expires_in": 300}).encode(),
            {"Content-Type": "application/json"},
        )

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        st = self.server.state
        path = urllib.parse.urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with st.lock:
            st.requests.append((self.command, self.path, dict(self.headers.items())))
            st.bodies.append((self.command, self.path, body))
        if path == "/token":
            self._token(body)
            return
        if self.command == "POST":
            self._send(405, b"")
            return
        repo_scope = ""
        if path.startswith("/v2/") and path != "/v2/":
            repo = path[4:].rsplit("/", 2)[0]
            repo_scope = f"repository:{repo}:pull"
        auth = self.headers.get("Authorization", "")
        if st.mode == "bearer":
            token = auth[7:] if auth.startswith("Bearer ") else ""
            granted = st.tokens.get(token)
            if granted is None or (repo_scope and repo_scope not in granted.split()):
                self._unauthorized(repo_scope)
                return
        elif st.mode == "basic" and _check_basic(st, auth) is None:
            self._unauthorized(repo_scope)
            return
        if st.redirect_blobs_to and "/blobs/" in path:
            location = f"http://{st.redirect_blobs_to}{self.path}"
            self._send(307, b"", {"Location": location})
            return
        self._forward(path)

    def _forward(self, path: str) -> None:
        st = self.server.state
        if "/blobs/" in path and st.blob_delay:
            with st.lock:
                st.in_flight += 1
                st.max_in_flight = max(st.max_in_flight, st.in_flight)
            try:
                time.sleep(st.blob_delay)
                self._forward_now(path)
            finally:
                with st.lock:
                    st.in_flight -= 1
            return
        self._forward_now(path)

    def _forward_now(self, path: str) -> None:
        st = self.server.state
        headers = {}
        for k in ("Accept", "Range"):
            if self.headers.get(k) and not (k == "Range" and st.ignore_range):
                headers[k] = self.headers[k]
        conn = http.client.HTTPConnection(st.upstream, timeout=30)
        try:
            conn.request(self.command, self.path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            out = {
                k: v
                for k, v in resp.getheaders()
                if k.lower()
                in ("content-type", "docker-content-digest", "content-range", "location", "etag")
            }
            digest = path.rsplit("/", 1)[-1] if "/blobs/" in path else ""
            with st.lock:
                cut = st.cut_blob_after.pop(digest, None) if digest else None
                corrupt = digest in st.corrupt_blob
            if corrupt and body:
                body = bytes([body[0] ^ 0xFF]) + body[1:]
            if cut is not None and resp.status in (200, 206) and self.command == "GET":
                # announce the full length, send part of it, drop the connection
                self.send_response(resp.status)
                for k, v in out.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            self._send(resp.status, body, out)
        finally:
            conn.close()


class _ProxyServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    state: ProxyState
    scheme = "http"


@contextlib.contextmanager
def run_token_proxy(
    state: ProxyState, tls: tuple[Path, Path] | None = None, client_ca: Path | None = None
) -> Iterator[tuple[str, ProxyState]]:
    """A registry front on 127.0.0.1 that demands Bearer (or Basic) and serves ``/token``;
    HTTPS (registry and token realm) with ``tls=(cert, key)``, and then a client certificate
    signed by ``client_ca`` if given."""
    server = _ProxyServer(("127.0.0.1", 0), _ProxyHandler)
    server.state = state
    if tls is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(tls[0]), str(tls[1]))
        if client_ca is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cafile=str(client_ca))
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        server.scheme = "https"
    thread = threading.Thread(target=server.serve_forever, name="nyx-token-proxy", daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_port}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def skopeo_available() -> bool:
    return shutil.which("skopeo") is not None and Path(REGISTRY_BIN).exists()


Builder = Callable[..., Layout]


def check_layout(root: Path) -> list[dict[str, Any]]:
    """Assert ``root`` is a complete, verified OCI layout; return its index entries."""
    assert json.loads((root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((root / "index.json").read_text())
    assert index["schemaVersion"] == 2

    def blob(desc: dict[str, Any]) -> bytes:
        alg, _, hexd = desc["digest"].partition(":")
        data = (root / "blobs" / alg / hexd).read_bytes()
        assert len(data) == desc["size"], desc
        assert sha256(data) == desc["digest"], desc
        return data

    for entry in index["manifests"]:
        manifest = json.loads(blob(entry))
        assert manifest["mediaType"] == entry["mediaType"]
        blob(manifest["config"])
        for layer in manifest["layers"]:
            blob(layer)
    leftovers = [
        p.name
        for p in (root / "blobs").rglob("*")
        if p.is_file()
        and (p.name.endswith((".partial", ".tmp", ".lock")) or p.name.startswith("."))
    ]
    assert not leftovers, leftovers
    return list(index["manifests"])


# --------------------------------------------------------------------------- forward proxy


class _ForwardProxyHandler(http.server.BaseHTTPRequestHandler):
    """An HTTP forward proxy: ``CONNECT`` tunnels and absolute-URI requests."""

    server: _ForwardProxyServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_CONNECT(self) -> None:
        self.server.seen.append(("CONNECT", self.path, self.headers.get("Proxy-Authorization")))
        host, _, port = self.server.resolve(self.path).rpartition(":")
        upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=30)
        self.send_response(200, "Connection established")
        self.end_headers()
        self.close_connection = True
        sockets = [self.connection, upstream]
        try:
            while True:
                readable, _, _ = select.select(sockets, [], [], 30)
                if not readable:
                    return
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (upstream if sock is self.connection else self.connection).sendall(data)
        finally:
            upstream.close()

    def _relay(self) -> None:
        self.server.seen.append((self.command, self.path, self.headers.get("Proxy-Authorization")))
        parts = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {
            k: v
            for k, v in self.headers.items()
            if k.lower() not in ("proxy-authorization", "proxy-connection", "connection", "host")
        }
        conn = http.client.HTTPConnection(self.server.resolve(parts.netloc), timeout=30)
        try:
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            conn.request(self.command, target, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            self.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        finally:
            conn.close()

    do_GET = do_HEAD = do_POST = _relay


class _ForwardProxyServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    seen: list[tuple[str, str, str | None]]
    hosts: dict[str, str]

    def resolve(self, netloc: str) -> str:
        """``name:port`` -> ``127.0.0.1:port`` for the names the proxy knows."""
        host, sep, port = netloc.rpartition(":")
        return f"{self.hosts[host]}{sep}{port}" if host in self.hosts else netloc


@contextlib.contextmanager
def run_forward_proxy(
    hosts: dict[str, str] | None = None,
) -> Iterator[tuple[str, list[tuple[str, str, str | None]]]]:
    """An HTTP proxy on 127.0.0.1; yields (``http://127.0.0.1:port``, requests seen).

    ``hosts`` maps names to addresses the way the proxy's own resolver would (a corporate
    proxy resolves names the client cannot): registries under made-up, non-loopback names
    (``registry.test``) that are served on 127.0.0.1."""
    server = _ForwardProxyServer(("127.0.0.1", 0), _ForwardProxyHandler)
    server.seen = []
    server.hosts = dict(hosts or {})
    thread = threading.Thread(target=server.serve_forever, name="nyx-fwd-proxy", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", server.seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --------------------------------------------------------------------------- JWT token realm


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_jwt(claims: dict[str, Any], cert: Path, key: Path) -> str:
    """An RS256 JWT with the certificate in ``x5c`` (signed with the openssl CLI)."""
    der = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-outform", "DER"],
        check=True,
        capture_output=True,
        timeout=30,
    ).stdout
    header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
    signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
    signature = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", str(key)],
        input=signing_input.encode(),
        check=True,
        capture_output=True,
        timeout=30,
    ).stdout
    return f"{signing_input}.{_b64url(signature)}"


@dataclass
class TokenServer:
    url: str
    requests: list[dict[str, list[str]]]


@contextlib.contextmanager
def run_jwt_token_server(
    cert: Path, key: Path, *, issuer: str, service: str, users: dict[str, str]
) -> Iterator[TokenServer]:
    """The token realm a ``docker-registry`` with ``auth: token`` trusts (its rootcertbundle
    is ``cert``). Anonymous requests get tokens without access; users get what they ask."""
    seen: list[dict[str, list[str]]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            seen.append(query)
            auth = self.headers.get("Authorization", "")
            user = ""
            if auth.startswith("Basic "):
                name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                if users.get(name) != password:
                    body = b'{"details":"invalid credentials"}'
                    self.send_response(401)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                user = name
            access = []
            for scope in query.get("scope", []):
                kind, _, rest = scope.partition(":")
                name, _, actions = rest.rpartition(":")
                if user and kind == "repository":
                    access.append({"type": kind, "name": name, "actions": actions.split(",")})
            now = int(time.time())
            claims = {
                "iss": issuer,
                "sub": user,
                "aud": service,
                "exp": now + 300,
                "nbf": now - 10,
                "iat": now,
                "jti": base64.b16encode(os.urandom(8)).decode(),
                "access": access,
            }
            body = json.dumps({"token": sign_jwt(claims, cert, key), "expires_in": 300}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="nyx-jwt-realm", daemon=True)
    thread.start()
    try:
        yield TokenServer(f"http://127.0.0.1:{server.server_port}/token", seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
