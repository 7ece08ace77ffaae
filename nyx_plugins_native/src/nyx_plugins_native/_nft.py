"""libnftables access: the distro's ``nftables`` binding, one context per network namespace.

The binding ships with the distro (Debian ``python3-nftables``) and must match the installed
libnftables, so it is not on PyPI. It is loaded from its file location with an import spec,
without putting the whole dist-packages directory on ``sys.path``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import threading
from collections import OrderedDict
from pathlib import Path
from types import ModuleType
from typing import Any

from nyx_core.errors import FirewallError

__all__ = ["NFT_SEARCH_PATHS", "current_netns_id", "load_nftables", "nft_context"]

NFT_SEARCH_PATHS = (
    Path("/usr/lib/python3/dist-packages/nftables"),
    Path("/usr/lib64/python3/site-packages/nftables"),
    Path("/usr/lib/python3/site-packages/nftables"),
)
_MODULE_NAME = "nftables"
_load_lock = threading.Lock()


def load_nftables(search: tuple[Path, ...] = NFT_SEARCH_PATHS) -> ModuleType:
    """Import the distro's ``nftables`` package from its file location.

    Raises :class:`FirewallError` (one line naming ``python3-nftables``) when it is absent.
    """
    with _load_lock:
        mod = sys.modules.get(_MODULE_NAME)
        if mod is not None and hasattr(mod, "Nftables"):
            return mod
        try:  # already importable (a system Python, or a venv with site packages)
            spec = importlib.util.find_spec(_MODULE_NAME)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            for pkg in search:
                init = pkg / "__init__.py"
                if init.is_file():
                    spec = importlib.util.spec_from_file_location(
                        _MODULE_NAME, init, submodule_search_locations=[str(pkg)]
                    )
                    break
        if spec is None or spec.loader is None:
            raise FirewallError(
                "the nftables Python binding is missing: install the distro package "
                "python3-nftables (apt-get install python3-nftables)"
            )
        mod = importlib.util.module_from_spec(spec)
        sys.modules[_MODULE_NAME] = mod
        try:
            spec.loader.exec_module(mod)
        except Exception as exc:
            sys.modules.pop(_MODULE_NAME, None)
            raise FirewallError(
                f"the nftables Python binding failed to load ({exc}): reinstall python3-nftables "
                "and the matching libnftables1"
            ) from exc
        return mod


def current_netns_id() -> int:
    """Inode of the calling thread's network namespace (cache key)."""
    return os.stat("/proc/thread-self/ns/net").st_ino


class NftContext:
    """A libnftables context bound to one network namespace; callers hold ``lock``."""

    def __init__(self) -> None:
        mod = load_nftables()
        self.nft = mod.Nftables()
        self.nft.set_json_output(True)
        self.nft.set_handle_output(True)
        self.lock = threading.Lock()

    def run(self, commands: list[dict[str, Any]], what: str) -> Any:
        """Run one JSON batch atomically; raise :class:`FirewallError` naming ``what``."""
        if not commands:
            return None
        payload = json.dumps({"nftables": commands})
        with self.lock:
            rc, out, err = self.nft.cmd(payload)
        if rc != 0:
            raise FirewallError(f"nftables {what} failed: {err.strip() or f'rc={rc}'}")
        return json.loads(out) if out else None

    def run_text(self, text: str, what: str) -> Any:
        with self.lock:
            rc, out, err = self.nft.cmd(text)
        if rc != 0:
            raise FirewallError(f"nftables {what} failed: {err.strip() or f'rc={rc}'}")
        return json.loads(out) if out else None


_contexts: OrderedDict[int, NftContext] = OrderedDict()
_ctx_lock = threading.Lock()
_MAX_CACHED = 4


def nft_context() -> NftContext:
    """The cached context of the calling thread's netns (created there on first use)."""
    key = current_netns_id()
    with _ctx_lock:
        ctx = _contexts.get(key)
        if ctx is not None:
            _contexts.move_to_end(key)
            return ctx
        ctx = NftContext()
        _contexts[key] = ctx
        while len(_contexts) > _MAX_CACHED:
            _contexts.popitem(last=False)
        return ctx
