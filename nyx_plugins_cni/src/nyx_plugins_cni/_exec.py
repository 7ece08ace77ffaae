"""Execute one CNI plugin binary: environment, config on stdin, timeout, result or error.

The plugin runs in the caller's network namespace (the spec's "runtime's networking
domain"): ``subprocess`` forks from the calling thread, so a thread switched into another
namespace with ``setns`` runs its plugins there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nyx_core import CniPluginError

__all__ = ["DEFAULT_TIMEOUT", "PluginExec", "PluginRequest"]

DEFAULT_TIMEOUT = 60.0
"""Seconds one plugin execution may take before it is killed."""

_TAIL = 400


@dataclass(frozen=True)
class PluginRequest:
    """The attachment parameters of one execution (the spec's ``CNI_*`` variables)."""

    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: str = ""


def _tail(data: bytes) -> str:
    text = data.decode("utf-8", "replace").strip()
    return text if len(text) <= _TAIL else "..." + text[-_TAIL:]


class PluginExec:
    """Runs plugins found in ``bin_dir`` with a per-execution ``timeout``."""

    def __init__(self, bin_dir: Path, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.bin_dir = Path(bin_dir)
        self.timeout = timeout
        base = dict(os.environ)
        for key in [k for k in base if k.startswith("CNI_")]:
            del base[key]
        base.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        self._base_env = base

    def path_of(self, plugin: str) -> Path:
        exe = self.bin_dir / plugin
        if not os.access(exe, os.X_OK) or not exe.is_file():
            raise CniPluginError(plugin, f"no executable {exe}", code=None)
        return exe

    def run(
        self,
        plugin: str,
        req: PluginRequest,
        config: Mapping[str, Any],
        *,
        pass_fds: Sequence[int] = (),
    ) -> dict[str, Any] | None:
        """Execute ``plugin`` and return its parsed stdout (None when it printed nothing).

        Raises :class:`~nyx_core.CniPluginError` naming the plugin and the command for an
        error object, a non-zero exit, a crash (signal), a hang (timeout) or garbage output.
        """
        exe = self.path_of(plugin)
        env = dict(self._base_env)
        env.update(
            CNI_COMMAND=req.command,
            CNI_CONTAINERID=req.container_id,
            CNI_NETNS=req.netns,
            CNI_IFNAME=req.ifname,
            CNI_ARGS=req.args,
            CNI_PATH=str(self.bin_dir),
        )
        stdin = json.dumps(config, separators=(",", ":")).encode()
        what = f"{req.command}"
        try:
            proc = subprocess.Popen(
                [str(exe)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd="/",
                start_new_session=True,  # a hang is killed with everything it started
                pass_fds=tuple(pass_fds),
            )
        except OSError as exc:
            raise CniPluginError(plugin, f"{what}: cannot execute {exe}: {exc}") from exc
        try:
            out, err = proc.communicate(stdin, timeout=self.timeout)
        except subprocess.TimeoutExpired as exc:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            out, err = proc.communicate()
            raise CniPluginError(
                plugin,
                f"{what}: no answer after {self.timeout:g}s, killed",
                details=_tail(err),
            ) from exc
        return self._parse(plugin, what, proc.returncode, out, err)

    @staticmethod
    def _parse(plugin: str, what: str, rc: int, out: bytes, err: bytes) -> dict[str, Any] | None:
        text = out.strip()
        obj: Any = None
        bad_json: str | None = None
        if text:
            try:
                obj = json.loads(text)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                bad_json = f"{exc}"
        if rc != 0:
            # the error object is on stdout (spec); some plugins print it on stderr
            for cand in (obj, _maybe_json(err)):
                if isinstance(cand, dict) and ("code" in cand or "msg" in cand):
                    code = cand.get("code")
                    raise CniPluginError(
                        plugin,
                        f"{what}: {cand.get('msg') or 'error'}",
                        code=code if isinstance(code, int) else None,
                        details=str(cand.get("details") or ""),
                    )
            if rc < 0:
                try:
                    sig = signal.Signals(-rc).name
                except ValueError:
                    sig = str(-rc)
                reason = f"{what}: crashed (killed by {sig})"
            else:
                reason = f"{what}: exited with status {rc} without a CNI error object"
            tail = _tail(err) or _tail(out)
            raise CniPluginError(plugin, reason, details=tail)
        if bad_json is not None:
            raise CniPluginError(
                plugin, f"{what}: printed garbage instead of JSON ({bad_json})", details=_tail(out)
            )
        if obj is None:
            return None
        if not isinstance(obj, dict):
            raise CniPluginError(
                plugin, f"{what}: printed a JSON {type(obj).__name__}, not an object"
            )
        if "code" in obj and "msg" in obj and "interfaces" not in obj and "ips" not in obj:
            # an error object with exit status 0: still an error
            code = obj.get("code")
            raise CniPluginError(
                plugin,
                f"{what}: {obj.get('msg')}",
                code=code if isinstance(code, int) else None,
                details=str(obj.get("details") or ""),
            )
        return obj

    def version(self, plugin: str, cni_version: str) -> list[str]:
        """The spec versions ``plugin`` supports (the ``VERSION`` command)."""
        obj = self.run(plugin, PluginRequest("VERSION"), {"cniVersion": cni_version})
        versions = (obj or {}).get("supportedVersions")
        if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
            raise CniPluginError(plugin, f"VERSION: no supportedVersions list in {obj!r}")
        return list(versions)


def _maybe_json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
