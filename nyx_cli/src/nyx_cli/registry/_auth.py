"""Registry credentials: ``WWW-Authenticate`` challenges and ``~/.docker/config.json``.

The config file is the one ``docker login`` writes: ``{"auths": {"<registry>": {"auth":
base64("user:password")}}}``; Docker Hub's key is ``https://index.docker.io/v1/``. nyx reads
``auth``, ``username``/``password``, ``identitytoken`` and ``registrytoken`` entries; credential
helpers (``credsStore``, ``credHelpers``) are not run.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nyx_core.errors import ConfigError

from ..errors import InvalidReferenceError
from ._reference import DEFAULT_DOMAIN, normalize_registry

__all__ = [
    "DOCKER_HUB_CONFIG_KEY",
    "Challenge",
    "Credentials",
    "default_auth_file",
    "load_credentials",
    "parse_www_authenticate",
    "store_credentials",
]

DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"


@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: ``scheme`` is lowercase, ``params`` keys too."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")


@dataclass(frozen=True)
class Credentials:
    """What the config file holds for one registry."""

    username: str = ""
    password: str = ""
    identity_token: str = ""
    registry_token: str = ""

    def basic_header(self) -> str | None:
        if not self.username and not self.password:
            return None
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def __repr__(self) -> str:  # never print secrets
        return f"Credentials(username={self.username!r}, password=<{len(self.password)} chars>)"


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t":
        i += 1
    return i


def _read_token(text: str, i: int) -> tuple[str, int]:
    start = i
    while i < len(text) and text[i] not in ' \t,="':
        i += 1
    return text[start:i], i


def _read_quoted(text: str, i: int) -> tuple[str, int]:
    # text[i] == '"'
    i += 1
    out: list[str] = []
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if c == '"':
            return "".join(out), i + 1
        out.append(c)
        i += 1
    raise ValueError("unterminated quoted string")


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` header value into its challenges (RFC 7235).

    ``Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull"``
    → ``[Challenge("bearer", {"realm": ..., "service": ..., "scope": ...})]``. Several
    challenges in one header are split; token68 values (``Basic abc==``) are kept under the
    ``""`` key. A malformed header raises ``ValueError``.
    """
    challenges: list[Challenge] = []
    text = header
    i = _skip_ws(text, 0)
    while i < len(text):
        if text[i] == ",":
            i = _skip_ws(text, i + 1)
            continue
        scheme, i = _read_token(text, i)
        if not scheme:
            raise ValueError(f"malformed WWW-Authenticate header: {header!r}")
        params: dict[str, str] = {}
        i = _skip_ws(text, i)
        while i < len(text):
            mark = i
            key, j = _read_token(text, i)
            j = _skip_ws(text, j)
            if key and not params and j < len(text) and text[j] == "=":
                k = j
                while k < len(text) and text[k] == "=":
                    k += 1
                after = _skip_ws(text, k)
                if after >= len(text) or text[after] == ",":
                    params[""] = key + text[j:k]  # token68 with '=' padding
                    i = after
                    continue
            if not key or j >= len(text) or text[j] != "=":
                if key and not params and (j >= len(text) or text[j] == ","):
                    # token68 (or a lone '=' padded one): "Basic dXNlcjpwYXNz"
                    params[""] = key
                    i = j
                    continue
                i = mark
                break
            j = _skip_ws(text, j + 1)
            if j < len(text) and text[j] == '"':
                value, j = _read_quoted(text, j)
            else:
                value, j = _read_token(text, j)
            params[key.lower()] = value
            j = _skip_ws(text, j)
            if j < len(text) and text[j] == ",":
                j = _skip_ws(text, j + 1)
            i = j
        challenges.append(Challenge(scheme.lower(), params))
    return challenges


def default_auth_file() -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    base = os.environ.get("DOCKER_CONFIG")
    if base:
        return Path(base) / "config.json"
    return Path.home() / ".docker" / "config.json"


def _config_key(domain: str) -> str:
    return DOCKER_HUB_CONFIG_KEY if domain == DEFAULT_DOMAIN else domain


def _read_config(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read registry auth file {str(path)!r}: {exc}") from exc
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"registry auth file {str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"registry auth file {str(path)!r}: top level must be an object")
    return data


def _entry_credentials(path: Path, key: str, entry: Any) -> Credentials:
    if not isinstance(entry, dict):
        raise ConfigError(f"registry auth file {str(path)!r}: auths[{key!r}] must be an object")
    username = str(entry.get("username") or "")
    password = str(entry.get("password") or "")
    auth = entry.get("auth")
    if auth:
        try:
            decoded = base64.b64decode(str(auth), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"registry auth file {str(path)!r}: auths[{key!r}].auth is not base64 "
                "of 'user:password'"
            ) from exc
        username, sep, password = decoded.partition(":")
        if not sep:
            raise ConfigError(
                f"registry auth file {str(path)!r}: auths[{key!r}].auth does not decode to "
                "'user:password'"
            )
    return Credentials(
        username=username,
        password=password,
        identity_token=str(entry.get("identitytoken") or ""),
        registry_token=str(entry.get("registrytoken") or ""),
    )


def load_credentials(domain: str, auth_file: Path | None = None) -> Credentials | None:
    """Return the stored credentials for registry ``domain`` (``docker.io``, ``host:port``).

    Keys are matched after normalisation, so ``https://host:5000/v2/`` matches ``host:5000``.
    Returns ``None`` when the file or the entry does not exist.
    """
    path = auth_file or default_auth_file()
    data = _read_config(path)
    auths = data.get("auths")
    if auths is None:
        auths = {}
    if not isinstance(auths, dict):
        raise ConfigError(f"registry auth file {str(path)!r}: 'auths' must be an object")
    exact = auths.get(_config_key(domain))
    if exact is not None:
        return _entry_credentials(path, _config_key(domain), exact)
    for key, entry in auths.items():
        try:
            if normalize_registry(str(key)) == domain:
                return _entry_credentials(path, str(key), entry)
        except InvalidReferenceError:
            continue
    return None


def credential_helper_configured(domain: str, auth_file: Path | None = None) -> bool:
    """True when the config delegates ``domain`` to a credential helper nyx does not run."""
    try:
        data = _read_config(auth_file or default_auth_file())
    except ConfigError:
        return False
    helpers = data.get("credHelpers") or {}
    return bool(data.get("credsStore")) or (
        isinstance(helpers, dict) and _config_key(domain) in helpers
    )


def store_credentials(
    domain: str, username: str, password: str, auth_file: Path | None = None
) -> Path:
    """Write ``auths[<domain>].auth`` into the config file, keeping every other key.

    The file is replaced atomically with mode 0600 (its directory is created 0700).
    Returns the path written.
    """
    path = auth_file or default_auth_file()
    data = _read_config(path)
    auths = data.get("auths")
    if not isinstance(auths, dict):
        auths = {}
    key = _config_key(domain)
    # drop other spellings of the same registry so one entry wins
    for other in list(auths):
        if other == key:
            continue
        try:
            if normalize_registry(str(other)) == domain:
                del auths[other]
        except InvalidReferenceError:
            continue
    raw = f"{username}:{password}".encode()
    entry = auths.get(key) if isinstance(auths.get(key), dict) else {}
    assert isinstance(entry, dict)
    entry = {k: v for k, v in entry.items() if k not in ("username", "password", "auth")}
    entry["auth"] = base64.b64encode(raw).decode("ascii")
    auths[key] = entry
    data["auths"] = auths
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".config.", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent="\t")
            fh.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
