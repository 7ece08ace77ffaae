"""Compose keys about what a container mounts and how it runs: ``volumes`` (service and top
level), ``tmpfs``, ``secrets`` and ``configs`` (from files, inline ``content`` or the
environment), ``env_file``, ``working_dir``, ``user``, ``stop_signal``,
``stop_grace_period``, ``cap_add``, ``cap_drop``, ``labels``, ``init``.

Validation is pure, like the rest of :mod:`nyx_cli.compose._project`: paths are made
absolute against the project directory, nothing is read. The files ``env_file``, secrets
and configs name are read when a container's request is built
(:meth:`ServiceRuntime.spec_fields`, with the plan's reader), so ``down`` and ``config``
never need them.
"""

from __future__ import annotations

import base64
import os
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from nyx_core.errors import ConfigError

from ..daemon._models_runtime import FileMount, Mount, check_target, parse_signal
from ..runtime._seccomp import normalize_capability

__all__ = [
    "VOLUME_LABEL",
    "ComposeFileSource",
    "ComposeVolume",
    "ServiceRuntime",
    "file_sources",
    "service_runtime",
    "volume_decl",
]

VOLUME_LABEL = "com.nyx.compose.volume"
Reader = Callable[[str], bytes]

_VOLUME_KEYS = {"name", "external", "labels", "driver", "driver_opts"}
_FILE_KEYS = {"file", "environment", "content", "external", "name"}
_MOUNT_KEYS = {"type", "source", "target", "read_only", "bind", "volume", "tmpfs", "consistency"}
_FILE_REF_KEYS = {"source", "target", "uid", "gid", "mode"}
_VOLUME_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _bad(path: str, value: object, why: str) -> ConfigError:
    return ConfigError(f"{path}: {why} (got {value!r})")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _mapping(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise _bad(path, value, "must be a mapping")
    return value


def _str(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise _bad(path, value, "must be a string")
    return value


def _bool(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise _bad(path, value, "must be true or false")
    return value


def _unknown(node: Mapping[str, Any], known: set[str], path: str) -> None:
    """A key nyx does not know under these keys would change what runs: an error."""
    for key in node:
        if key not in known and not key.startswith("x-"):
            raise _bad(_join(path, key), node[key], "is not supported")


def _labels(value: object, path: str) -> dict[str, str]:
    if isinstance(value, list):
        out: dict[str, str] = {}
        for i, item in enumerate(value):
            key, _, val = _str(item, f"{path}[{i}]").partition("=")
            if not key:
                raise _bad(f"{path}[{i}]", item, "must be KEY=VALUE or KEY")
            out[key] = val
        return out
    return {k: "" if v is None else str(v) for k, v in _mapping(value, path).items()}


def _host_path(text: str, project_dir: str | None) -> str:
    if text.startswith("~"):
        text = os.path.expanduser(text)
    if not text.startswith("/") and project_dir is not None:
        text = os.path.join(project_dir, text)
    return posixpath.normpath(text) if text.startswith("/") else text


def _is_path(text: str) -> bool:
    return text.startswith(("/", ".", "~"))


def _int(value: object, path: str, lo: int = 0) -> int:
    if isinstance(value, bool):
        raise _bad(path, value, "must be a number")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or value < lo:
        raise _bad(path, value, f"must be a whole number >= {lo}")
    return value


def _mode(value: object, path: str) -> int:
    if isinstance(value, str):
        try:
            value = int(value, 8)
        except ValueError:
            raise _bad(path, value, "must be an octal mode such as 0440") from None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0o7777:
        raise _bad(path, value, "must be a mode between 0 and 07777")
    return value


def _size(value: object, path: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"(\d+)\s*([bkmg]?)b?", value.strip().lower())
        if m and int(m.group(1)) > 0:
            return (
                int(m.group(1))
                * {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2)]
            )
    raise _bad(path, value, "must be a size such as 64m or a number of bytes")


def duration(value: object, path: str) -> float:
    """A Compose duration (``10s``, ``1m30s``, ``500ms``, ``1.5h``) or a number, in seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str) and value and _DURATION_RE.sub("", value) == "":
        return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_RE.findall(value))
    raise _bad(path, value, "must be a duration such as 10s, 1m30s or 500ms")


def _target(value: object, path: str) -> str:
    try:
        return check_target(value, "mount target")
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None


# ------------------------------------------------------------------ top-level volumes


@dataclass(frozen=True)
class ComposeVolume:
    """A top-level volume: ``key`` in the file, ``name`` nyxd knows it by."""

    key: str
    name: str
    external: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)

    def request(self, project: str) -> dict[str, Any]:
        """The body of ``POST /v1/volumes`` that creates it, labelled with the project."""
        from ._project import PROJECT_LABEL

        labels = {**self.labels, PROJECT_LABEL: project, VOLUME_LABEL: self.key}
        return {"name": self.name, "labels": labels}


def volume_decl(key: str, value: object, path: str, project: str) -> ComposeVolume:
    """One entry of the top-level ``volumes:``."""
    if not _VOLUME_NAME_RE.match(key):
        raise _bad(path, key, "volume key must be letters, digits, '_', '.', '-'")
    name, external, labels = f"{project}_{key}", False, {}
    if value is not None:
        node = _mapping(value, path)
        _unknown(node, _VOLUME_KEYS, path)
        if "external" in node:
            ext = node["external"]
            if isinstance(ext, Mapping):  # legacy `external: {name: x}`
                name = _str(_mapping(ext, _join(path, "external")).get("name", key), path)
                external = True
            else:
                external = _bool(ext, _join(path, "external"))
                if external:
                    name = key
        if "name" in node:
            name = _str(node["name"], _join(path, "name"))
        if not _VOLUME_NAME_RE.match(name):
            raise _bad(_join(path, "name"), name, "must be letters, digits, '_', '.', '-'")
        driver = node.get("driver", "local")
        if driver != "local":
            raise _bad(_join(path, "driver"), driver, "only the local driver is supported")
        if node.get("driver_opts"):
            raise _bad(
                _join(path, "driver_opts"),
                node["driver_opts"],
                "driver options are not supported (a nyx volume is a directory; use a bind "
                "mount for anything else)",
            )
        if node.get("labels") is not None:
            labels = _labels(node["labels"], _join(path, "labels"))
        if external and ("labels" in node or "driver" in node):
            raise _bad(path, dict(node), "an external volume takes only name")
    return ComposeVolume(key=key, name=name, external=external, labels=labels)


# ------------------------------------------------------------------ secrets and configs


@dataclass(frozen=True)
class ComposeFileSource:
    """A top-level secret or config: where its content comes from."""

    key: str
    kind: Literal["secrets", "configs"]
    file: str | None = None  # absolute path
    environment: str | None = None  # variable name
    content: str | None = None

    def read(self, reader: Reader, environ: Mapping[str, str]) -> bytes:
        path = f"{self.kind}.{self.key}"
        if self.file is not None:
            try:
                return reader(self.file)
            except OSError as exc:
                raise _bad(_join(path, "file"), self.file, exc.strerror or str(exc)) from exc
        if self.environment is not None:
            if self.environment not in environ:
                raise _bad(_join(path, "environment"), self.environment, "is not set")
            return environ[self.environment].encode()
        return (self.content or "").encode()


def file_sources(
    value: object, kind: Literal["secrets", "configs"], project_dir: str | None
) -> dict[str, ComposeFileSource]:
    """The top-level ``secrets:`` or ``configs:``."""
    out: dict[str, ComposeFileSource] = {}
    if value is None:
        return out
    for key, conf in _mapping(value, kind).items():
        path = _join(kind, key)
        node = _mapping(conf, path)
        _unknown(node, _FILE_KEYS if kind == "configs" else _FILE_KEYS - {"content"}, path)
        if node.get("external"):
            raise _bad(
                _join(path, "external"),
                node["external"],
                f"external {kind} belong to a swarm; give the {kind[:-1]} a file:",
            )
        sources = [k for k in ("file", "environment", "content") if k in node]
        if len(sources) != 1:
            raise _bad(
                path,
                dict(node),
                "needs exactly one of "
                + ", ".join(["file", "environment", *(["content"] if kind == "configs" else [])]),
            )
        which = sources[0]
        text = _str(node[which], _join(path, which))
        if which == "file":
            out[key] = ComposeFileSource(key, kind, file=_host_path(text, project_dir))
        elif which == "environment":
            out[key] = ComposeFileSource(key, kind, environment=text)
        else:
            out[key] = ComposeFileSource(key, kind, content=text)
    return out


@dataclass(frozen=True)
class _FileRef:
    source: str
    target: str
    uid: int = 0
    gid: int = 0
    mode: int = 0o444


def _file_refs(
    value: object,
    path: str,
    kind: Literal["secrets", "configs"],
    declared: Mapping[str, ComposeFileSource],
) -> tuple[_FileRef, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _bad(path, value, f"must be a list of {kind[:-1]} names or mappings")
    out: list[_FileRef] = []
    for i, item in enumerate(value):
        ipath = f"{path}[{i}]"
        node: Mapping[str, Any] = (
            {"source": item} if isinstance(item, str) else _mapping(item, ipath)
        )
        _unknown(node, _FILE_REF_KEYS, ipath)
        source = _str(node.get("source"), _join(ipath, "source"))
        if source not in declared:
            names = ", ".join(sorted(declared)) or "none"
            raise _bad(ipath, source, f"is not declared in the top-level {kind} ({names})")
        default = f"/run/secrets/{source}" if kind == "secrets" else f"/{source}"
        target = node.get("target", default)
        target = _str(target, _join(ipath, "target"))
        if kind == "secrets" and not target.startswith("/"):
            target = f"/run/secrets/{target}"
        out.append(
            _FileRef(
                source=source,
                target=_target(target, _join(ipath, "target")),
                uid=_int(node.get("uid", 0), _join(ipath, "uid")),
                gid=_int(node.get("gid", 0), _join(ipath, "gid")),
                mode=_mode(node.get("mode", 0o444), _join(ipath, "mode")),
            )
        )
    return tuple(out)


# ------------------------------------------------------------------ service mounts


def _short_volume(
    text: str, path: str, declared: Mapping[str, ComposeVolume], project_dir: str | None
) -> tuple[Mount, str | None]:
    """``[SOURCE:]TARGET[:MODE]``: the mount, and a host dir to create when missing."""
    parts = text.split(":")
    if len(parts) > 3 or not all(parts):
        raise _bad(path, text, "must be [SOURCE:]TARGET[:MODE]")
    if len(parts) == 1 or (len(parts) == 2 and not parts[1].startswith("/")):
        parts = ["", *parts]
    source, target = parts[0], _target(parts[1], path)
    modes = parts[2].split(",") if len(parts) > 2 else []
    readonly = nocopy = False
    for mode in modes:
        if mode in ("ro", "rw"):
            readonly = mode == "ro"
        elif mode == "nocopy":
            nocopy = True
        elif mode not in ("z", "Z", "rprivate", "private", "consistent", "cached", "delegated"):
            raise _bad(path, text, f"mode {mode!r} is not supported")
    if source and _is_path(source):
        host = _host_path(source, project_dir)
        if nocopy:
            raise _bad(path, text, "nocopy is a volume option")
        return Mount(type="bind", source=host, target=target, readonly=readonly), host
    if source:
        if source not in declared:
            names = ", ".join(sorted(declared)) or "none"
            raise _bad(path, source, f"volume is not declared in the top-level volumes ({names})")
        source = declared[source].name
    return (
        Mount(
            type="volume", source=source or None, target=target, readonly=readonly, nocopy=nocopy
        ),
        None,
    )


def _long_volume(
    node: Mapping[str, Any],
    path: str,
    declared: Mapping[str, ComposeVolume],
    project_dir: str | None,
) -> tuple[Mount, str | None]:
    _unknown(node, _MOUNT_KEYS, path)
    kind = node.get("type", "volume")
    if kind not in ("bind", "volume", "tmpfs"):
        raise _bad(_join(path, "type"), kind, "must be bind, volume or tmpfs")
    if "target" not in node:
        raise _bad(path, dict(node), "needs 'target'")
    target = _target(node["target"], _join(path, "target"))
    readonly = _bool(node.get("read_only", False), _join(path, "read_only"))
    for sub in ("bind", "volume", "tmpfs"):
        if sub in node and sub != kind:
            raise _bad(_join(path, sub), node[sub], f"is not an option of a {kind} mount")
    opts = _mapping(node.get(kind) or {}, _join(path, kind)) if kind in node else {}
    source = node.get("source")
    create: str | None = None
    if kind == "bind":
        _unknown(opts, {"propagation", "create_host_path", "selinux"}, _join(path, "bind"))
        prop = opts.get("propagation", "rprivate")
        if prop not in ("rprivate", "private"):
            raise _bad(_join(path, "bind.propagation"), prop, "only rprivate is supported")
        host = _host_path(_str(source, _join(path, "source")), project_dir)
        if _bool(opts.get("create_host_path", False), _join(path, "bind.create_host_path")):
            create = host
        return Mount(type="bind", source=host, target=target, readonly=readonly), create
    if kind == "volume":
        _unknown(opts, {"nocopy"}, _join(path, "volume"))
        nocopy = _bool(opts.get("nocopy", False), _join(path, "volume.nocopy"))
        name = None
        if source is not None:
            key = _str(source, _join(path, "source"))
            if key not in declared:
                names = ", ".join(sorted(declared)) or "none"
                raise _bad(
                    _join(path, "source"),
                    key,
                    f"volume is not declared in the top-level volumes ({names})",
                )
            name = declared[key].name
        return Mount(
            type="volume", source=name, target=target, readonly=readonly, nocopy=nocopy
        ), None
    if source is not None:
        raise _bad(_join(path, "source"), source, "a tmpfs mount has no source")
    _unknown(opts, {"size", "mode"}, _join(path, "tmpfs"))
    return (
        Mount(
            type="tmpfs",
            target=target,
            readonly=readonly,
            tmpfs_size=_size(opts["size"], _join(path, "tmpfs.size")) if "size" in opts else None,
            tmpfs_mode=_mode(opts["mode"], _join(path, "tmpfs.mode")) if "mode" in opts else None,
        ),
        None,
    )


def _tmpfs(value: object, path: str) -> list[Mount]:
    from ..client._commands import BadValue, tmpfs_specs

    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise _bad(path, value, "must be a path or a list of paths")
    out = []
    for i, item in enumerate(items):
        ipath = f"{path}[{i}]" if isinstance(value, list) else path
        try:
            (spec,) = tmpfs_specs([_str(item, ipath)])
            out.append(Mount.model_validate(spec))
        except BadValue as exc:
            raise _bad(ipath, item, exc.message.split(": ", 1)[-1]) from None
        except ValueError as exc:
            raise _bad(ipath, item, str(exc).splitlines()[-1].strip()) from None
    return out


# ------------------------------------------------------------------ one service


@dataclass(frozen=True)
class _EnvFile:
    path: str
    required: bool = True


@dataclass(frozen=True)
class ServiceRuntime:
    """A service's mounts and process settings, as validated."""

    mounts: tuple[Mount, ...] = ()
    create_paths: tuple[str, ...] = ()  # short-syntax bind sources up makes when missing
    secrets: tuple[_FileRef, ...] = ()
    configs: tuple[_FileRef, ...] = ()
    env_files: tuple[_EnvFile, ...] = ()
    workdir: str | None = None
    user: str | None = None
    stop_signal: str | None = None
    stop_timeout: float | None = None
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    init: bool = False
    path: str = ""

    def environment(self, reader: Reader, environ: Mapping[str, str]) -> dict[str, str]:
        """The variables of the service's ``env_file`` entries (later files win)."""
        from .._envfile import parse_env_file

        env: dict[str, str] = {}
        for i, ef in enumerate(self.env_files):
            epath = f"{self.path}.env_file[{i}]"
            try:
                text = reader(ef.path).decode()
            except FileNotFoundError as exc:
                if not ef.required:
                    continue
                raise _bad(epath, ef.path, "not found") from exc
            except (OSError, UnicodeDecodeError) as exc:
                raise _bad(epath, ef.path, str(exc)) from exc
            try:
                env.update(parse_env_file(text, ef.path, environ=environ))
            except ValueError as exc:
                raise ConfigError(f"{epath}: {exc}") from exc
        return env

    def spec_fields(
        self,
        reader: Reader,
        environ: Mapping[str, str],
        secrets: Mapping[str, ComposeFileSource],
        configs: Mapping[str, ComposeFileSource],
    ) -> dict[str, Any]:
        """The ``ContainerSpec`` fields of these keys (files read through ``reader``)."""
        files = []
        for refs, sources in ((self.secrets, secrets), (self.configs, configs)):
            for ref in refs:
                data = sources[ref.source].read(reader, environ)
                files.append(
                    FileMount(
                        name=ref.source,
                        target=ref.target,
                        data=base64.b64encode(data).decode(),
                        mode=ref.mode,
                        uid=ref.uid,
                        gid=ref.gid,
                    )
                )
        return {
            "mounts": list(self.mounts),
            "files": files,
            "workdir": self.workdir,
            "user": self.user,
            "stop_signal": self.stop_signal,
            "stop_timeout": self.stop_timeout,
            "cap_add": list(self.cap_add),
            "cap_drop": list(self.cap_drop),
            "init": self.init,
        }


def _env_files(value: object, path: str, project_dir: str | None) -> tuple[_EnvFile, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise _bad(path, value, "must be a path or a list of paths")
    out = []
    for i, item in enumerate(items):
        ipath = f"{path}[{i}]" if isinstance(value, list) else path
        if isinstance(item, str):
            out.append(_EnvFile(_host_path(item, project_dir)))
            continue
        node = _mapping(item, ipath)
        _unknown(node, {"path", "required", "format"}, ipath)
        if node.get("format") not in (None, "raw") and "format" in node:
            raise _bad(_join(ipath, "format"), node["format"], "only the default format")
        required = _bool(node.get("required", True), _join(ipath, "required"))
        out.append(
            _EnvFile(
                _host_path(_str(node.get("path"), _join(ipath, "path")), project_dir), required
            )
        )
    return tuple(out)


def _caps(value: object, path: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _bad(path, value, "must be a list of capabilities")
    out = []
    for i, item in enumerate(value):
        try:
            out.append(normalize_capability(_str(item, f"{path}[{i}]"), f"{path}[{i}]"))
        except ConfigError as exc:
            raise _bad(f"{path}[{i}]", item, "is not a Linux capability (or ALL)") from exc
    return tuple(dict.fromkeys(out))


#: the service keys this module reads
SERVICE_KEYS = frozenset(
    {
        "volumes",
        "tmpfs",
        "secrets",
        "configs",
        "env_file",
        "working_dir",
        "user",
        "stop_signal",
        "stop_grace_period",
        "cap_add",
        "cap_drop",
        "labels",
        "init",
    }
)


def service_runtime(
    node: Mapping[str, Any],
    path: str,
    *,
    volumes: Mapping[str, ComposeVolume],
    secrets: Mapping[str, ComposeFileSource],
    configs: Mapping[str, ComposeFileSource],
    project_dir: str | None,
) -> ServiceRuntime:
    """Validate the keys of :data:`SERVICE_KEYS` of one service (``path``: ``services.x``)."""
    mounts: list[Mount] = []
    create: list[str] = []
    raw = node.get("volumes") or []
    vpath = _join(path, "volumes")
    if not isinstance(raw, list):
        raise _bad(vpath, raw, "must be a list")
    for i, item in enumerate(raw):
        ipath = f"{vpath}[{i}]"
        if isinstance(item, str):
            mount, host = _short_volume(item, ipath, volumes, project_dir)
        else:
            mount, host = _long_volume(_mapping(item, ipath), ipath, volumes, project_dir)
        mounts.append(mount)
        if host is not None:
            create.append(host)
    if node.get("tmpfs") is not None:
        mounts.extend(_tmpfs(node["tmpfs"], _join(path, "tmpfs")))
    seen: dict[str, int] = {}
    for i, m in enumerate(mounts):
        if m.target in seen:
            raise _bad(vpath, m.target, "two mounts have this target")
        seen[m.target] = i
    workdir = None
    if node.get("working_dir") is not None:
        workdir = _str(node["working_dir"], _join(path, "working_dir"))
        if not workdir.startswith("/"):
            raise _bad(_join(path, "working_dir"), workdir, "must be an absolute path")
    user = None
    if node.get("user") is not None:
        u = node["user"]
        user = (
            str(u)
            if isinstance(u, int) and not isinstance(u, bool)
            else _str(u, _join(path, "user"))
        )
    stop_signal = None
    if node.get("stop_signal") is not None:
        stop_signal = _str(node["stop_signal"], _join(path, "stop_signal"))
        try:
            parse_signal(stop_signal)
        except ValueError:
            raise _bad(_join(path, "stop_signal"), stop_signal, "is not a signal") from None
    stop_timeout = None
    if node.get("stop_grace_period") is not None:
        stop_timeout = duration(node["stop_grace_period"], _join(path, "stop_grace_period"))
    return ServiceRuntime(
        mounts=tuple(mounts),
        create_paths=tuple(create),
        secrets=_file_refs(node.get("secrets"), _join(path, "secrets"), "secrets", secrets),
        configs=_file_refs(node.get("configs"), _join(path, "configs"), "configs", configs),
        env_files=_env_files(node["env_file"], _join(path, "env_file"), project_dir)
        if node.get("env_file") is not None
        else (),
        workdir=workdir,
        user=user,
        stop_signal=stop_signal,
        stop_timeout=stop_timeout,
        cap_add=_caps(node.get("cap_add", []), _join(path, "cap_add")),
        cap_drop=_caps(node.get("cap_drop", []), _join(path, "cap_drop")),
        labels=_labels(node["labels"], _join(path, "labels"))
        if node.get("labels") is not None
        else {},
        init=_bool(node.get("init", False), _join(path, "init")),
        path=path,
    )
