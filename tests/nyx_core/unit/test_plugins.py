"""Entry-point discovery, loading only the selected plugin, the facades and the adapters."""

from __future__ import annotations

import subprocess
import sys
import types
from collections.abc import Sequence
from importlib.metadata import EntryPoint
from typing import Any

import pytest

import nyx_core._plugins as plugins_mod
from nyx_core import (
    DRIVER_GROUP,
    BackendError,
    DnsFacade,
    NetworkBackend,
    NyxSettings,
    PluginLoadError,
    PluginNotFoundError,
    PortMapping,
    SetupOptions,
    SetupResult,
    backend_plugin,
    dns_plugin,
    hookimpl,
    installed_plugins,
    make_plugin_manager,
)
from nyx_core.testing import HookRecorder


def _fake_entry_points(monkeypatch: pytest.MonkeyPatch, mapping: dict[str, object]) -> None:
    """Serve entry points named after ``mapping``'s keys from a fake module."""
    mod = types.ModuleType("nyx_fake_plugins")
    eps = []
    for name, obj in mapping.items():
        setattr(mod, name.replace("-", "_"), obj)
        eps.append(EntryPoint(name, f"nyx_fake_plugins:{name.replace('-', '_')}", DRIVER_GROUP))
    monkeypatch.setitem(sys.modules, "nyx_fake_plugins", mod)
    monkeypatch.setattr(
        plugins_mod, "entry_points", lambda group: eps if group == DRIVER_GROUP else []
    )


class Recording:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def ensure_network(self, settings: NyxSettings) -> None:
        self.calls.append(("ensure", settings.bridge))

    def setup(
        self, container_id: str, netns_path: str, ports: Sequence[PortMapping], opts: SetupOptions
    ) -> SetupResult:
        self.calls.append(("setup", container_id))
        return SetupResult(container_id=container_id, network=opts.network)

    def teardown(self, container_id: str, netns_path: str) -> None:
        self.calls.append(("teardown", container_id))


def test_unknown_driver_names_it_and_lists_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_entry_points(monkeypatch, {"alpha": object(), "beta": object()})
    with pytest.raises(PluginNotFoundError) as info:
        NetworkBackend.load("bogus")
    msg = str(info.value)
    assert "'bogus'" in msg
    assert "installed: alpha, beta" in msg


def test_class_driver_through_the_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    impl = Recording()
    _fake_entry_points(monkeypatch, {"rec": backend_plugin(lambda: impl)})
    pm = make_plugin_manager()
    rec = HookRecorder(pm)
    backend = NetworkBackend.load("rec", pm)
    backend.ensure_network(NyxSettings())
    result = backend.setup("c1", "/x", [], SetupOptions(network="n1"))
    backend.teardown("c1", "/x")
    assert result == SetupResult(container_id="c1", network="n1")
    assert impl.calls == [("ensure", "nyx0"), ("setup", "c1"), ("teardown", "c1")]
    assert rec.names() == [
        "nyx_backend_ensure_network",
        "nyx_backend_setup",
        "nyx_backend_teardown",
    ]
    assert rec.calls[1].kwargs["container_id"] == "c1"
    rec.close()


def test_only_the_selected_driver_is_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded: list[str] = []

    class Lazy:
        def __init__(self, name: str) -> None:
            self.name = name

    eps = [
        EntryPoint("one", "nyx_lazy_one:plugin", DRIVER_GROUP),
        EntryPoint("two", "nyx_lazy_two:plugin", DRIVER_GROUP),
    ]
    monkeypatch.setattr(plugins_mod, "entry_points", lambda group: eps)
    for n in ("one", "two"):
        mod = types.ModuleType(f"nyx_lazy_{n}")

        def factory(n: str = n) -> Recording:
            loaded.append(n)
            return Recording()

        mod.plugin = backend_plugin(factory)  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, f"nyx_lazy_{n}", mod)
    pm = make_plugin_manager()
    NetworkBackend.load("two", pm).ensure_network(NyxSettings())
    assert loaded == ["two"]
    assert [name for name, _ in pm.list_name_plugin()] == [f"{DRIVER_GROUP}:two"]


def test_plugin_with_a_misspelled_hook_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    class Bad:
        @hookimpl
        def nyx_backend_setpu(self) -> None: ...

    _fake_entry_points(monkeypatch, {"bad": Bad()})
    with pytest.raises(PluginLoadError, match="'bad'.*nyx_backend_setpu"):
        NetworkBackend.load("bad")


def test_plugin_missing_hooks_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    class Half:
        @hookimpl
        def nyx_backend_setup(
            self, container_id: str, netns_path: str, ports: object, opts: object
        ) -> None:
            return None

    _fake_entry_points(monkeypatch, {"half": Half()})
    with pytest.raises(PluginLoadError, match="nyx_backend_ensure_network, nyx_backend_teardown"):
        NetworkBackend.load("half")


def test_import_error_is_a_plugin_load_error(monkeypatch: pytest.MonkeyPatch) -> None:
    eps = [EntryPoint("broken", "nyx_no_such_module_xyz:plugin", DRIVER_GROUP)]
    monkeypatch.setattr(plugins_mod, "entry_points", lambda group: eps)
    with pytest.raises(PluginLoadError, match="'broken'.*failed to import"):
        NetworkBackend.load("broken")


def test_driver_exceptions_become_backend_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    class Boom(Recording):
        def setup(self, *a: Any, **kw: Any) -> SetupResult:
            raise RuntimeError("kaboom")

    _fake_entry_points(monkeypatch, {"boom": backend_plugin(Boom)})
    backend = NetworkBackend.load("boom")
    with pytest.raises(BackendError, match="'boom' nyx_backend_setup failed.*kaboom"):
        backend.setup("c", "/x", [], SetupOptions())


def test_setup_must_return_a_setup_result(monkeypatch: pytest.MonkeyPatch) -> None:
    class Wrong(Recording):
        def setup(self, *a: Any, **kw: Any) -> Any:
            return {"ip": "10.0.0.2"}

    _fake_entry_points(monkeypatch, {"wrong": backend_plugin(Wrong)})
    with pytest.raises(BackendError, match="returned dict, not SetupResult"):
        NetworkBackend.load("wrong").setup("c", "/x", [], SetupOptions())


def test_dns_adapter_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    class Dns:
        def __init__(self) -> None:
            self.names: dict[str, str] = {}

        def start(self, settings: NyxSettings) -> None: ...
        def stop(self) -> None: ...

        def register(
            self, container_id: str, hostname: str, ips: Any, aliases: Any, networks: Any
        ) -> None:
            self.names[container_id] = hostname

        def deregister(self, container_id: str) -> None:
            self.names.pop(container_id, None)

        def resolv_conf(self, container_id: str) -> str:
            return f"nameserver 10.88.0.1 # {self.names[container_id]}\n"

    impl = Dns()
    pm = make_plugin_manager()
    pm.register(dns_plugin(lambda: impl))
    dns = DnsFacade(pm, "test")
    dns.start(NyxSettings())
    dns.register("c1", "web", [], [], ["nyx"], [])
    assert dns.resolv_conf("c1") == "nameserver 10.88.0.1 # web\n"
    dns.deregister("c1")
    assert impl.names == {}


def test_installed_plugins_report_versions() -> None:
    found = {(p.group, p.name): p for p in installed_plugins()}
    assert (DRIVER_GROUP, "loopback") in found
    assert found[(DRIVER_GROUP, "loopback")].distribution == "nyx-driver-loopback"
    assert found[(DRIVER_GROUP, "loopback")].version == "0.1.0"


def test_core_alone_imports_no_driver_dependencies() -> None:
    code = (
        "import sys, nyx_core, nyx_core.hookspecs, nyx_core.testing;"
        "from nyx_core import NetworkBackend;"
        "NetworkBackend.load('loopback');"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pyroute2', 'dnslib', 'click', 'nyx_plugins_native', 'nyx_plugins_cni'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
