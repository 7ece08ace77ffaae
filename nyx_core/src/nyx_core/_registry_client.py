"""The registry API v2 HTTP client behind ``nyx pull`` and ``nyx login``.

``http.client`` and ``ssl`` only. One :class:`RegistryClient` talks to one registry host:
``GET /v2/`` decides https or (insecure registries only) plain http and learns the
``WWW-Authenticate`` challenge; requests then carry a bearer token for their scope (fetched
from the challenge's realm, anonymously or with stored credentials) or basic auth. Redirects
are followed, and ``Authorization`` is never sent to another host (blob CDNs).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import ipaddress
import json
import ssl
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Literal, NoReturn

from loguru import logger

from ._auth import Credentials, credential_helper_configured, parse_www_authenticate
from ._reference import DOCKER_HUB_API_HOST, Reference, is_loopback_registry
from .errors import ImageNotFoundError, RegistryError, UnauthorizedError

__all__ = ["RegistryClient", "Response", "error_detail", "proxy_for"]

USER_AGENT = "nyx/0.1.0 (python http.client)"
_CERTS_DIRS = (Path("/etc/docker/certs.d"), Path("/etc/containers/certs.d"))

logger.disable(__name__)


class Response:
    """An HTTP response plus the connection to close with it."""

    def __init__(self, resp: http.client.HTTPResponse, conn: http.client.HTTPConnection) -> None:
        self.resp = resp
        self.conn = conn
        self.status = resp.status
        self.reason = resp.reason
        self.headers = resp.headers

    def read(self, n: int | None = None) -> bytes:
        return self.resp.read(n)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.resp.close()
        with contextlib.suppress(Exception):
            self.conn.close()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def error_detail(resp: Response) -> tuple[set[str], str]:
    try:
        body = resp.read(64 << 10)
    except (OSError, http.client.HTTPException):
        body = b""
    codes: set[str] = set()
    messages: list[str] = []
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        for err in json.loads(body).get("errors", []):
            codes.add(str(err.get("code", "")))
            if err.get("message"):
                messages.append(f"{err.get('code')}: {err['message']}")
    text = "; ".join(messages) or f"HTTP {resp.status} {resp.reason}"
    return codes, text


def _bypass_proxy(parts: urllib.parse.SplitResult) -> bool:
    """Loopback registries are never proxied (as Go's ProxyFromEnvironment)."""
    return is_loopback_registry(parts.netloc)


def _no_proxy_match(parts: urllib.parse.SplitResult, no_proxy: str) -> bool:
    """``NO_PROXY`` entries: ``*``, ``host``, ``.domain`` / ``domain`` (and subdomains),
    ``host:port``, IP addresses and CIDRs."""
    host = (parts.hostname or "").lower()
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        if "/" in entry:
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False):
                    return True
            continue
        if entry == parts.netloc.lower():
            return True
        name = entry.lstrip(".")
        if host == name or host.endswith("." + name):
            return True
    return False


def proxy_for(parts: urllib.parse.SplitResult) -> urllib.parse.SplitResult | None:
    """The ``HTTPS_PROXY`` / ``HTTP_PROXY`` to use for ``parts``, honouring ``NO_PROXY``."""
    if _bypass_proxy(parts):
        return None
    proxies = urllib.request.getproxies_environment()
    url = proxies.get(parts.scheme)
    if not url:
        return None
    if _no_proxy_match(parts, proxies.get("no", "")):
        return None
    proxy = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    if proxy.scheme not in ("http", "") or not proxy.hostname:
        raise RegistryError(
            f"unsupported proxy {url!r} for {parts.scheme} (use an http:// proxy URL)"
        )
    return proxy


def _proxy_auth(proxy: urllib.parse.SplitResult) -> dict[str, str]:
    if not proxy.username:
        return {}
    user = urllib.parse.unquote(proxy.username)
    password = urllib.parse.unquote(proxy.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {"Proxy-Authorization": f"Basic {token}"}


class RegistryClient:
    """A registry API v2 client for one registry host and one repository scope."""

    def __init__(
        self,
        domain: str,
        *,
        insecure: bool,
        credentials: Credentials | None,
        timeout: float = 60.0,
    ) -> None:
        self.domain = domain
        self.host = DOCKER_HUB_API_HOST if domain == "docker.io" else domain
        self.insecure = insecure
        self.credentials = credentials
        self.timeout = timeout
        self.scheme = "https"
        self.mode: Literal["none", "basic", "bearer"] = "none"
        self.bearer: dict[str, str] = {}
        self._tokens: dict[str, str] = {}
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._contexts_lock = threading.Lock()  # never held while _lock is wanted
        self._lock = threading.Lock()
        self._pinged = False

    # -- connections

    def _ssl_context(self, netloc: str) -> ssl.SSLContext:
        """The TLS context for ``netloc`` (cached: loading the system CAs is not free)."""
        with self._contexts_lock:
            ctx = self._contexts.get(netloc)
            if ctx is None:
                ctx = self._contexts[netloc] = self._make_ssl_context(netloc)
        return ctx

    def _make_ssl_context(self, netloc: str) -> ssl.SSLContext:
        host = urllib.parse.urlsplit(f"//{netloc}").hostname or netloc
        if netloc == self.host and self.insecure:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        ctx = ssl.create_default_context()
        for base in _CERTS_DIRS:
            for name in (netloc, host):
                certs = base / name
                if certs.is_dir():
                    for ca in sorted(certs.glob("*.crt")):
                        with contextlib.suppress(ssl.SSLError, OSError):
                            ctx.load_verify_locations(cafile=str(ca))
        return ctx

    def send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        *,
        body: bytes | None = None,
        auth_netloc: str | None = None,
    ) -> Response:
        """One request, following redirects; ``Authorization`` only goes to ``auth_netloc``."""
        auth_netloc = auth_netloc or self.host
        for _ in range(10):
            parts = urllib.parse.urlsplit(url)
            hdrs = {"User-Agent": USER_AGENT, **headers}
            if parts.netloc != auth_netloc:
                hdrs.pop("Authorization", None)
            if parts.scheme not in ("http", "https"):
                raise RegistryError(f"registry {self.domain}: unsupported URL {url!r}")
            target = parts.path or "/"
            if parts.query:
                target += "?" + parts.query
            conn: http.client.HTTPConnection
            proxy = proxy_for(parts)
            if proxy is None:
                if parts.scheme == "https":
                    conn = http.client.HTTPSConnection(
                        parts.hostname or "",
                        parts.port,
                        timeout=self.timeout,
                        context=self._ssl_context(parts.netloc),
                    )
                else:
                    conn = http.client.HTTPConnection(
                        parts.hostname or "", parts.port, timeout=self.timeout
                    )
            else:
                proxy_headers = _proxy_auth(proxy)
                if parts.scheme == "https":  # CONNECT tunnel, TLS end to end
                    conn = http.client.HTTPSConnection(
                        proxy.hostname or "",
                        proxy.port or 80,
                        timeout=self.timeout,
                        context=self._ssl_context(parts.netloc),
                    )
                    conn.set_tunnel(parts.hostname or "", parts.port or 443, proxy_headers)
                else:  # plain HTTP: absolute URI to the proxy
                    conn = http.client.HTTPConnection(
                        proxy.hostname or "", proxy.port or 80, timeout=self.timeout
                    )
                    target = urllib.parse.urlunsplit(parts._replace(fragment=""))
                    hdrs.update(proxy_headers)
            try:
                conn.request(method, target, body=body, headers=hdrs)
                resp = conn.getresponse()
            except BaseException:
                conn.close()
                raise
            location = resp.headers.get("Location")
            if resp.status in (301, 302, 303, 307, 308) and location:
                resp.read()
                conn.close()
                url = urllib.parse.urljoin(url, location)
                if resp.status == 303:
                    method, body = "GET", None
                continue
            return Response(resp, conn)
        raise RegistryError(f"registry {self.domain}: too many redirects for {method} {url}")

    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}"

    # -- authentication

    def ping(self) -> None:
        """``GET /v2/``: pick https or (insecure registries only) http, learn the challenge."""
        if self._pinged:
            return
        schemes = ["https", "http"] if self.insecure else ["https"]
        last: BaseException | None = None
        for scheme in schemes:
            self.scheme = scheme
            try:
                resp = self.send("GET", f"{scheme}://{self.host}/v2/", {})
            except (OSError, http.client.HTTPException) as exc:
                logger.debug("ping {}://{} failed: {}", scheme, self.host, exc)
                last = exc
                continue
            with resp:
                status = resp.status
                challenge = resp.headers.get("WWW-Authenticate", "")
                resp.read()
            if status == 401:
                self._learn(challenge)
            elif status != 200:
                raise RegistryError(
                    f"{scheme}://{self.host}/v2/ answered HTTP {status}: "
                    f"{self.domain!r} does not look like an OCI registry (API v2)"
                )
            self._pinged = True
            return
        hint = ""
        if isinstance(last, ssl.SSLError) and not self.insecure:
            hint = (
                f"; if {self.domain} serves plain HTTP or an untrusted certificate, "
                "mark it as an insecure registry (nyx pull --insecure)"
            )
        raise RegistryError(
            f"cannot reach registry {self.domain} ({'/'.join(schemes)} on {self.host}): "
            f"{last}{hint}"
        ) from last

    def _learn(self, header: str) -> None:
        try:
            challenges = parse_www_authenticate(header)
        except ValueError as exc:
            raise RegistryError(
                f"registry {self.domain}: malformed WWW-Authenticate {header!r}"
            ) from exc
        bearer = next((c for c in challenges if c.scheme == "bearer" and c.realm), None)
        basic = next((c for c in challenges if c.scheme == "basic"), None)
        if bearer is not None:
            self.mode = "bearer"
            self.bearer = dict(bearer.params)
        elif basic is not None:
            self.mode = "basic"
        else:
            raise UnauthorizedError(
                f"registry {self.domain} wants an authentication scheme nyx does not support: "
                f"{header!r}"
            )

    def _no_credentials_hint(self) -> str:
        if self.credentials is not None:
            return ""
        return f"; log in with 'nyx login {self.domain}'"

    def fetch_token(self, scope: str, *, account: bool = False) -> str:
        """Ask the bearer realm for a token for ``scope`` (empty: login check only)."""
        realm = self.bearer.get("realm", "")
        parts = urllib.parse.urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise RegistryError(f"registry {self.domain}: bad token realm {realm!r}")
        query: list[tuple[str, str]] = []
        if self.bearer.get("service"):
            query.append(("service", self.bearer["service"]))
        for item in scope.split():
            query.append(("scope", item))
        creds = self.credentials
        headers: dict[str, str] = {}
        body: bytes | None = None
        method = "GET"
        if creds is not None and creds.identity_token:
            method = "POST"
            form = [
                ("grant_type", "refresh_token"),
                ("refresh_token", creds.identity_token),
                ("client_id", "nyx"),
                ("access_type", "offline"),
                *query,
            ]
            body = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            url = realm
        else:
            if creds is not None:
                basic = creds.basic_header()
                if basic:
                    headers["Authorization"] = basic
                if account and creds.username:
                    query.append(("account", creds.username))
            sep = "&" if parts.query else "?"
            url = realm + (sep + urllib.parse.urlencode(query) if query else "")
        try:
            resp = self.send(method, url, headers, body=body, auth_netloc=parts.netloc)
        except (OSError, http.client.HTTPException) as exc:
            raise RegistryError(f"token realm {realm} of {self.domain} unreachable: {exc}") from exc
        with resp:
            if resp.status in (401, 403):
                _, text = error_detail(resp)
                if creds is not None and creds.username:
                    what = f"the credentials for user {creds.username!r}"
                else:
                    what = "anonymous access"
                raise UnauthorizedError(
                    f"registry {self.domain}: token realm refused {what}: {text}"
                    + self._no_credentials_hint()
                )
            if resp.status != 200:
                _, text = error_detail(resp)
                raise RegistryError(f"registry {self.domain}: token realm {realm}: {text}")
            try:
                data = json.loads(resp.read(1 << 20))
                token = data.get("token") or data.get("access_token")
            except (ValueError, AttributeError) as exc:
                raise RegistryError(f"registry {self.domain}: token realm sent bad JSON") from exc
        if not isinstance(token, str) or not token:
            raise RegistryError(f"registry {self.domain}: token realm sent no token")
        return token

    def _authorization(self, scope: str, *, refresh: bool = False) -> str | None:
        if self.mode == "basic":
            header = self.credentials.basic_header() if self.credentials else None
            if header is None:
                raise UnauthorizedError(
                    f"registry {self.domain} requires a user name and password"
                    + self._no_credentials_hint()
                )
            return header
        if self.mode == "bearer":
            if self.credentials is not None and self.credentials.registry_token:
                return f"Bearer {self.credentials.registry_token}"
            with self._lock:
                token = None if refresh else self._tokens.get(scope)
                if token is None:
                    token = self.fetch_token(scope)
                    self._tokens[scope] = token
            return f"Bearer {token}"
        return None

    def request(
        self, method: str, path: str, scope: str, headers: dict[str, str] | None = None
    ) -> Response:
        """A request to ``/v2/...`` with authentication, retried once after a 401."""
        self.ping()
        url = self.base_url() + path
        for attempt in range(2):
            hdrs = dict(headers or {})
            auth = self._authorization(scope, refresh=attempt > 0)
            if auth:
                hdrs["Authorization"] = auth
            resp = self.send(method, url, hdrs)
            if resp.status == 401 and attempt == 0:
                challenge = resp.headers.get("WWW-Authenticate", "")
                resp.read()
                resp.close()
                if challenge:
                    self._learn(challenge)
                continue
            return resp
        return resp

    def request_retrying(
        self, method: str, path: str, scope: str, headers: dict[str, str] | None = None
    ) -> Response:
        """:meth:`request`, retrying connection errors, 429 and 5xx a few times."""
        delay = 0.5
        for attempt in range(4):
            try:
                resp = self.request(method, path, scope, headers)
            except (OSError, http.client.HTTPException) as exc:
                if attempt == 3:
                    raise RegistryError(
                        f"registry {self.domain}: {method} {path} failed: {exc}"
                    ) from exc
                time.sleep(delay)
                delay *= 2
                continue
            if resp.status in (429, 500, 502, 503, 504) and attempt < 3:
                retry_after = resp.headers.get("Retry-After", "")
                resp.close()
                wait_s = float(retry_after) if retry_after.isdigit() else delay
                time.sleep(min(wait_s, 10.0))
                delay *= 2
                continue
            return resp
        raise AssertionError("unreachable")

    def fail(self, resp: Response, what: str, ref: Reference) -> NoReturn:
        codes, text = error_detail(resp)
        resp.close()
        not_found = {"MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN", "NOT_FOUND"}
        if resp.status == 404 or codes & not_found:
            raise ImageNotFoundError(
                f"image {ref} not found: registry {self.domain} has no {what} ({text})"
            )
        if resp.status in (401, 403) or codes & {"UNAUTHORIZED", "DENIED"}:
            hint = self._no_credentials_hint()
            if self.credentials is None and credential_helper_configured(self.domain):
                hint += " (credential helpers in the docker config are not used by nyx)"
            raise UnauthorizedError(
                f"pull access to {ref} denied by registry {self.domain} ({text}): the "
                f"repository may not exist or may need credentials{hint}"
            )
        raise RegistryError(f"registry {self.domain}: {what} of {ref}: {text}")
