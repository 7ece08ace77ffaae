"""The registry API v2 HTTP client behind ``nyx pull`` and ``nyx login``, on httpx.

One :class:`RegistryClient` talks to one registry host: ``GET /v2/`` decides https or (for
insecure registries only) plain http and learns the ``WWW-Authenticate`` challenge; requests
then carry a bearer token for their scope (fetched from the challenge's realm, anonymously or
with stored credentials) or basic auth.

What httpx does for us: connection pooling, proxies (``CONNECT`` tunnels, absolute URIs,
proxy credentials that only the proxy sees), and building redirect requests that drop
``Authorization`` when they leave the origin the request was made for. What we keep in hand:
which redirects are followed at all (never for the token ``POST``, whose body holds a refresh
token; never to plain HTTP for a registry that is not insecure), how much of a body is read
(every read is capped), the TLS context per host (system CAs plus ``certs.d``), and which
proxy a URL takes (``NO_PROXY`` with CIDRs, loopback never proxied).
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import ipaddress
import json
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, NoReturn

import httpx
from loguru import logger

from ..errors import ImageNotFoundError, RegistryError, UnauthorizedError
from ._auth import Credentials, credential_helper_configured, parse_www_authenticate
from ._reference import DOCKER_HUB_API_HOST, Reference, is_loopback_registry

__all__ = [
    "TRANSPORT_ERRORS",
    "RegistryClient",
    "Response",
    "error_detail",
    "proxy_for",
]

USER_AGENT = f"nyx/0.1.0 (python httpx/{httpx.__version__})"
CERTS_DIRS = (Path("/etc/docker/certs.d"), Path("/etc/containers/certs.d"))
MAX_REDIRECTS = 10
CHUNK = 1 << 16
MAX_TOKEN_BYTES = 1 << 20
MAX_ERROR_BYTES = 64 << 10

#: what a failed exchange with a registry raises (connection, TLS, protocol, timeout)
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (OSError, httpx.TransportError)

logger.disable(__name__)


class Response:
    """A streamed response: :meth:`read` returns at most what it is asked for."""

    def __init__(self, resp: httpx.Response) -> None:
        self.resp = resp
        self.status = resp.status_code
        self.reason = resp.reason_phrase
        self.headers = resp.headers
        self.url = str(resp.url)
        self._chunks: Iterator[bytes] = resp.iter_raw(CHUNK)  # as sent: no Content-Encoding
        self._buf = bytearray()

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes of the body; fewer only at its end."""
        while len(self._buf) < n:
            chunk = next(self._chunks, b"")
            if not chunk:
                break
            self._buf += chunk
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.resp.close()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def error_detail(resp: Response) -> tuple[set[str], str]:
    try:
        body = resp.read(MAX_ERROR_BYTES)
    except TRANSPORT_ERRORS:
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


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the default port filled in, to compare origins."""
    parsed = httpx.URL(url)
    port = parsed.port or {"http": 80, "https": 443}.get(parsed.scheme)
    return parsed.scheme, parsed.host, port


def _ssl_error(exc: BaseException | None) -> ssl.SSLError | None:
    """The TLS error somewhere in ``exc``'s chain (httpx wraps httpcore wraps ssl)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, ssl.SSLError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


# --------------------------------------------------------------------------- proxies


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


class _Transport(httpx.BaseTransport):
    """Routes each request to a pooled httpx transport for its TLS context and proxy.

    A registry, its token realm and its blob CDN may need different CA sets (``certs.d`` is
    per host) and different proxies (``NO_PROXY``), so each (scheme, host, proxy) gets its
    own :class:`httpx.HTTPTransport`; each one keeps its connections alive between requests.
    """

    def __init__(self, client: RegistryClient) -> None:
        self._client = client
        self._transports: dict[tuple[str, str, str], httpx.HTTPTransport] = {}
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        parts = urllib.parse.urlsplit(str(request.url))
        proxy = proxy_for(parts)
        proxy_url = proxy.geturl() if proxy is not None else ""
        netloc = parts.netloc.rpartition("@")[2]
        key = (parts.scheme, netloc if parts.scheme == "https" else "", proxy_url)
        with self._lock:
            transport = self._transports.get(key)
            if transport is None:
                ctx = self._client.ssl_context(netloc if parts.scheme == "https" else "")
                transport = self._transports[key] = httpx.HTTPTransport(
                    verify=ctx, proxy=proxy_url or None, trust_env=False, retries=0
                )
        return transport.handle_request(request)

    def close(self) -> None:
        with self._lock:
            transports, self._transports = list(self._transports.values()), {}
        for transport in transports:
            transport.close()


# --------------------------------------------------------------------------- the client


class RegistryClient:
    """A registry API v2 client for one registry host."""

    #: what a failed exchange raises (for callers that must not import httpx themselves)
    transport_errors = TRANSPORT_ERRORS

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
        self._http = httpx.Client(
            transport=_Transport(self),
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,  # send() follows them, one checked hop at a time
            trust_env=False,  # proxies: proxy_for(); no netrc, no SSL_CERT_* surprises
            cookies=http.cookiejar.CookieJar(  # no cookie jar, as docker's Go client
                policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[])
            ),
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- TLS

    def ssl_context(self, netloc: str) -> ssl.SSLContext:
        """The TLS context for ``netloc`` (cached: loading the system CAs is not free)."""
        with self._contexts_lock:
            ctx = self._contexts.get(netloc)
            if ctx is None:
                ctx = self._contexts[netloc] = self._make_ssl_context(netloc)
        return ctx

    def _make_ssl_context(self, netloc: str) -> ssl.SSLContext:
        """System CAs plus ``certs.d/<host[:port]>/*.crt``; ``*.cert`` + ``*.key`` there are
        a client certificate, as in docker. Unverified only for an insecure registry itself."""
        if netloc == self.host and self.insecure:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx = ssl.create_default_context()
        if not netloc:
            return ctx
        host = urllib.parse.urlsplit(f"//{netloc}").hostname or netloc
        for base in CERTS_DIRS:
            for name in dict.fromkeys((netloc, host)):
                certs = base / name
                if not certs.is_dir():
                    continue
                for ca in sorted(certs.glob("*.crt")):
                    try:
                        ctx.load_verify_locations(cafile=str(ca))
                    except (ssl.SSLError, OSError) as exc:
                        logger.warning("ignoring CA {}: {}", ca, exc)
                for cert in sorted(certs.glob("*.cert")):
                    key = cert.with_suffix(".key")
                    try:
                        ctx.load_cert_chain(str(cert), str(key))
                    except (ssl.SSLError, OSError) as exc:
                        raise RegistryError(
                            f"client certificate {str(cert)!r} for {netloc} (key "
                            f"{str(key)!r}) cannot be used: {exc}"
                        ) from exc
        return ctx

    # -- one request

    def _check_url(self, url: httpx.URL, what: str) -> None:
        if url.scheme not in ("http", "https"):
            raise RegistryError(f"registry {self.domain}: unsupported URL {str(url)!r} ({what})")
        if url.scheme == "http" and not self.insecure:
            raise RegistryError(
                f"registry {self.domain}: refusing plain HTTP to {str(url)!r} ({what}); only "
                "a registry nyxd is configured to treat as insecure may use plain HTTP "
                f"(nyxd --insecure-registry {self.domain})"
            )

    def send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        *,
        body: bytes | None = None,
        follow_redirects: bool = True,
    ) -> Response:
        """One request, following redirects one checked hop at a time.

        httpx builds each redirect request (``Response.next_request``): ``Authorization``
        is dropped once the request leaves the origin it was made for. With
        ``follow_redirects=False`` a redirect is an error: a token ``POST`` (body: refresh
        token, password) must never be re-sent elsewhere, which a 307/308 would do.
        """
        try:
            request = self._http.build_request(method, url, headers=headers, content=body)
        except httpx.InvalidURL as exc:
            raise RegistryError(f"registry {self.domain}: bad URL {url!r}: {exc}") from exc
        for hop in range(MAX_REDIRECTS + 1):
            self._check_url(request.url, f"{method} {url}" if hop else method)
            resp = self._http.send(request, stream=True)
            if not resp.has_redirect_location:
                return Response(resp)
            location = resp.headers.get("Location", "")
            resp.close()  # the body of a redirect is never read
            if not follow_redirects:
                raise RegistryError(
                    f"registry {self.domain}: {method} {url} was redirected to {location!r}; "
                    "nyx does not follow redirects of token requests (their body holds "
                    "credentials)"
                )
            next_request = resp.next_request
            if next_request is None:  # pragma: no cover - httpx sets it for redirects
                raise RegistryError(f"registry {self.domain}: bad redirect to {location!r}")
            request = next_request
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
            except TRANSPORT_ERRORS as exc:
                logger.debug("ping {}://{} failed: {}", scheme, self.host, exc)
                last = exc
                continue
            with resp:
                status = resp.status
                challenge = resp.headers.get("WWW-Authenticate", "")
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
        if _ssl_error(last) is not None and not self.insecure:
            hint = (
                f"; if {self.domain} serves plain HTTP or an untrusted certificate, either "
                f"put its CA in /etc/docker/certs.d/{self.host}/ca.crt or make it an insecure "
                f"registry of nyxd (nyxd --insecure-registry {self.domain})"
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

    def _realm(self) -> urllib.parse.SplitResult:
        realm = self.bearer.get("realm", "")
        parts = urllib.parse.urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RegistryError(f"registry {self.domain}: bad token realm {realm!r}")
        if parts.username is not None or parts.password is not None:
            raise RegistryError(f"registry {self.domain}: token realm {realm!r} has user info")
        if parts.scheme == "http" and not self.insecure:
            raise RegistryError(
                f"registry {self.domain}: refusing the plain-HTTP token realm {realm!r} (it "
                "would carry credentials and tokens in clear text); only a registry nyxd is "
                f"configured to treat as insecure may use one (nyxd --insecure-registry "
                f"{self.domain})"
            )
        return parts

    def fetch_token(self, scope: str, *, account: bool = False) -> str:
        """Ask the bearer realm for a token for ``scope`` (empty: login check only)."""
        realm = self.bearer.get("realm", "")
        parts = self._realm()
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
            # a redirected token POST is refused, not followed: on a 307/308 httpx (like Go,
            # like browsers) re-sends the body, the refresh token, to wherever it points.
            # A GET is followed: its only secret is the Authorization header, which httpx
            # drops when the redirect leaves the realm's origin.
            resp = self.send(method, url, headers, body=body, follow_redirects=method == "GET")
        except TRANSPORT_ERRORS as exc:
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
                data = json.loads(resp.read(MAX_TOKEN_BYTES))
                token = data.get("token") or data.get("access_token")
            except (ValueError, AttributeError) as exc:
                raise RegistryError(f"registry {self.domain}: token realm sent bad JSON") from exc
            except TRANSPORT_ERRORS as exc:
                raise RegistryError(f"registry {self.domain}: reading the token: {exc}") from exc
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
            if resp.status == 401 and attempt == 0 and _origin(resp.url) == _origin(url):
                # only the registry itself may change how we authenticate: a 401 from the
                # host a blob was redirected to (a CDN) must not name a realm to send the
                # stored credentials to
                challenge = resp.headers.get("WWW-Authenticate", "")
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
            except TRANSPORT_ERRORS as exc:
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
