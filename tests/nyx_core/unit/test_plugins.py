"""Entry-point discovery, loading only the selected plugin (a class made once per load),
the facades, optional hooks and capabilities."""

from __future__ import annotations

import subprocess
import sys
import types
from collections.abc import Mapping, Sequence
from importlib.metadata import EntryPoint
from typing import Any

import pytest

import nyx_core._plugins as plugins_mod
from nyx_core import (
    DNS_GROUP,
    DRIVER_GROUP,
    BackendCapabilities,
    BackendError,
    ConfigError,
    DnsFacade,
    NetworkBackend,
    NetworkInfo,
    NetworkSpec,
    NyxSettings,
    PluginLoadError,
    PluginNotFoundError,
    PortMapping,
    SetupOptions,
    SetupResult,
    hookimpl,
    installed_plugins,
    make_plugin_manager,
)
from nyx_core.testing import HookRecorder


def _fake_entry_points(
    monkeypatch: pytest.MonkeyPatch, mapping: dict[str, object], group: str = DRIVER_GROUP
) -> None:
    """Serve entry points named after ``mapping``'s keys from a fake module."""
    wanted = group
    mod = types.ModuleType("nyx_fake_plugins")
    eps = []
    for name, obj in mapping.items():
        setattr(mod, name.replace("-", "_"), obj)
        eps.append(EntryPoint(name, f"nyx_fake_plugins:{name.replace('-', '_')}", group))
    monkeypatch.setitem(sys.modules, "nyx_fake_plugins", mod)
    monkeypatch.setattr(plugins_mod, "entry_points", lambda group: eps if group == wanted else [])


class Recording:
    """A minimal driver written the one supported way: a class of hookimpls."""

    made: list[Recording] = []

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        Recording.made.append(self)

    @hookimpl
    def nyx_backend_ensure_network(self, settings: NyxSettings, options: Mapping[str, str]) -> Any:
        self.calls.append(("ensure", dict(options)))
        return True

    @hookimpl
    def nyx_backend_setup(
        self, container_id: str, netns_path: str, ports: Sequence[PortMapping], opts: SetupOptions
    ) -> SetupResult:
        self.calls.append(("setup", container_id))
        return SetupResult(container_id=container_id, network=opts.network)

    @hookimpl
    def nyx_backend_teardown(self, container_id: str, netns_path: str) -> Any:
        self.calls.append(("teardown", container_id))
        return True


def test_unknown_driver_names_it_and_lists_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_entry_points(monkeypatch, {"alpha": object(), "beta": object()})
    with pytest.raises(PluginNotFoundError) as info:
        NetworkBackend.load("bogus")
    msg = str(info.value)
    assert "'bogus'" in msg
    assert "installed: alpha, beta" in msg


def test_the_entry_point_class_is_made_once_per_load(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_entry_points(monkeypatch, {"rec": Recording})
    Recording.made.clear()
    pm = make_plugin_manager()
    rec = HookRecorder(pm)
    backend = NetworkBackend.load("rec", pm)
    backend.ensure_network(NyxSettings(driver_opts={"mtu": "9000"}))
    result = backend.setup("c1", "/x", [], SetupOptions(network="n1"))
    backend.teardown("c1", "/x")
    assert result == SetupResult(container_id="c1", network="n1")
    (impl,) = Recording.made
    assert impl.calls == [("ensure", {"mtu": "9000"}), ("setup", "c1"), ("teardown", "c1")]
    assert rec.names() == [
        "nyx_backend_ensure_network",
        "nyx_backend_setup",
        "nyx_backend_teardown",
    ]
    assert rec.calls[1].kwargs["container_id"] == "c1"
    rec.close()
    NetworkBackend.load("rec")
    assert len(Recording.made) == 2 and Recording.made[0] is not Recording.made[1]


def test_only_the_selected_driver_is_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    eps = [
        EntryPoint("one", "nyx_lazy_one:Plugin", DRIVER_GROUP),
        EntryPoint("two", "nyx_lazy_two:Plugin", DRIVER_GROUP),
    ]
    monkeypatch.setattr(plugins_mod, "entry_points", lambda group: eps)
    for n in ("two",):  # "one" is not importable: loading "two" must not try it
        mod = types.ModuleType(f"nyx_lazy_{n}")
        mod.Plugin = Recording  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, f"nyx_lazy_{n}", mod)
    pm = make_plugin_manager()
    NetworkBackend.load("two", pm).ensure_network(NyxSettings())
    assert [name for name, _ in pm.list_name_plugin()] == [f"{DRIVER_GROUP}:two"]
    assert "nyx_lazy_one" not in sys.modules


def test_plugin_with_a_misspelled_hook_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    class Bad:
        @hookimpl
        def nyx_backend_setpu(self) -> None: ...

    _fake_entry_points(monkeypatch, {"bad": Bad})
    with pytest.raises(PluginLoadError, match="'bad'.*nyx_backend_setpu"):
        NetworkBackend.load("bad")


def test_plugin_missing_required_hooks_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    class Half:
        @hookimpl
        def nyx_backend_setup(
            self, container_id: str, netns_path: str, ports: object, opts: object
        ) -> None:
            return None

    _fake_entry_points(monkeypatch, {"half": Half})
    with pytest.raises(PluginLoadError, match="nyx_backend_ensure_network, nyx_backend_teardown"):
        NetworkBackend.load("half")


def test_a_class_that_fails_to_start_is_a_plugin_load_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Grumpy(Recording):
        def __init__(self) -> None:
            raise OSError("no /dev/net/tun")

    _fake_entry_points(monkeypatch, {"grumpy": Grumpy})
    with pytest.raises(PluginLoadError, match="'grumpy'.*failed to start.*no /dev/net/tun"):
        NetworkBackend.load("grumpy")


def test_import_error_is_a_plugin_load_error(monkeypatch: pytest.MonkeyPatch) -> None:
    eps = [EntryPoint("broken", "nyx_no_such_module_xyz:Plugin", DRIVER_GROUP)]
    monkeypatch.setattr(plugins_mod, "entry_points", lambda group: eps)
    with pytest.raises(PluginLoadError, match="'broken'.*failed to import"):
        NetworkBackend.load("broken")


def test_driver_exceptions_become_backend_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    class Boom(Recording):
        @hookimpl
        def nyx_backend_setup(self, *a: Any, **kw: Any) -> SetupResult:
            raise RuntimeError("kaboom")

    _fake_entry_points(monkeypatch, {"boom": Boom})
    backend = NetworkBackend.load("boom")
    with pytest.raises(BackendError, match="'boom' nyx_backend_setup failed.*kaboom"):
        backend.setup("c", "/x", [], SetupOptions())


def test_setup_must_return_a_setup_result(monkeypatch: pytest.MonkeyPatch) -> None:
    class Wrong(Recording):
        @hookimpl
        def nyx_backend_setup(
            self, container_id: str, netns_path: str, ports: Any, opts: Any
        ) -> Any:
            return {"ip": "10.0.0.2"}

    _fake_entry_points(monkeypatch, {"wrong": Wrong})
    with pytest.raises(BackendError, match="returned dict, not SetupResult"):
        NetworkBackend.load("wrong").setup("c", "/x", [], SetupOptions())


def test_without_optional_hooks_every_capability_is_false(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_entry_points(monkeypatch, {"rec": Recording})
    backend = NetworkBackend.load("rec")
    assert backend.capabilities() == BackendCapabilities()
    assert backend.gc(["a"]) is None
    backend.network_remove("x")  # nothing to do, no error
    with pytest.raises(ConfigError, match="'rec' cannot create networks.*network 'n1'"):
        backend.network_create(NetworkSpec(name="n1"))


def test_capabilities_and_network_lifecycle_through_the_facade(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Full(Recording):
        @hookimpl
        def nyx_backend_capabilities(self) -> BackendCapabilities:
            return BackendCapabilities(publishes_ports=True, network_lifecycle=True)

        @hookimpl
        def nyx_backend_network_create(self, network: NetworkSpec) -> NetworkInfo:
            self.calls.append(("create", network.name))
            return NetworkInfo(name=network.name, subnet=network.subnet, interface="br-x")

        @hookimpl
        def nyx_backend_network_remove(self, name: str) -> Any:
            self.calls.append(("remove", name))
            return True

        @hookimpl
        def nyx_backend_gc(self, container_ids: Sequence[str]) -> Any:
            self.calls.append(("gc", list(container_ids)))
            return {"released": 0}

    _fake_entry_points(monkeypatch, {"full": Full})
    backend = NetworkBackend.load("full")
    assert backend.capabilities().network_lifecycle
    info = backend.network_create(NetworkSpec(name="n1", subnet="10.9.0.0/24"))  # type: ignore[arg-type]
    assert (info.name, str(info.subnet), info.interface) == ("n1", "10.9.0.0/24", "br-x")
    backend.network_remove("n1")
    assert backend.gc(["c1"]) == {"released": 0}
    assert Recording.made[-1].calls == [("create", "n1"), ("remove", "n1"), ("gc", ["c1"])]


def test_an_ipv4_only_driver_never_sees_a_subnet6(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """A driver without the ipv6 capability is refused an IPv6 network, and a dual-stack
    default network (NYXD_CONTAINER_SUBNET6), before it is called: the user gets one clear
    error instead of a network silently IPv4-only."""

    class Four(Recording):
        @hookimpl
        def nyx_backend_capabilities(self) -> BackendCapabilities:
            return BackendCapabilities(network_lifecycle=True)

        @hookimpl
        def nyx_backend_network_create(self, network: NetworkSpec) -> NetworkInfo:
            self.calls.append(("create", network.name))
            return NetworkInfo(name=network.name)

        @hookimpl
        def nyx_backend_network_remove(self, name: str) -> Any:
            return True

    _fake_entry_points(monkeypatch, {"four": Four})
    backend = NetworkBackend.load("four")
    spec = NetworkSpec(name="n6", subnet="10.9.0.0/24", subnet6="fd00:9::/64")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"network 'n6': subnet6 fd00:9::/64: .*'four'.*ipv6"):
        backend.network_create(spec)
    dual = NyxSettings(state_dir=tmp_path, container_subnet6="fd00:88::/64")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"NYXD_CONTAINER_SUBNET6.*'four' is IPv4-only"):
        backend.ensure_network(dual)
    assert Recording.made[-1].calls == []
    backend.network_create(NetworkSpec(name="n4", subnet="10.9.0.0/24"))  # type: ignore[arg-type]
    backend.ensure_network(NyxSettings(state_dir=tmp_path))
    assert [c[0] for c in Recording.made[-1].calls] == ["create", "ensure"]


def test_claiming_network_lifecycle_without_its_hooks_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Liar(Recording):
        @hookimpl
        def nyx_backend_capabilities(self) -> BackendCapabilities:
            return BackendCapabilities(network_lifecycle=True)

    _fake_entry_points(monkeypatch, {"liar": Liar})
    with pytest.raises(PluginLoadError, match="'liar' declares network_lifecycle"):
        NetworkBackend.load("liar")


def test_capabilities_must_be_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    class Dicty(Recording):
        @hookimpl
        def nyx_backend_capabilities(self) -> Any:
            return {"publishes_ports": True}

    _fake_entry_points(monkeypatch, {"dicty": Dicty})
    with pytest.raises(PluginLoadError, match="returned dict, not BackendCapabilities"):
        NetworkBackend.load("dicty")


def test_dns_provider_class_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    class Dns:
        def __init__(self) -> None:
            self.names: dict[str, tuple[str, list[str]]] = {}

        @hookimpl
        def nyx_dns_start(self, settings: NyxSettings) -> Any:
            return True

        @hookimpl
        def nyx_dns_stop(self) -> Any:
            return True

        @hookimpl
        def nyx_dns_register(
            self, container_id: str, hostname: str, internal_networks: Sequence[str]
        ) -> Any:  # a provider may ask for a subset of the arguments
            self.names[container_id] = (hostname, list(internal_networks))
            return True

        @hookimpl
        def nyx_dns_deregister(self, container_id: str) -> Any:
            self.names.pop(container_id, None)
            return True

        @hookimpl
        def nyx_dns_resolv_conf(self, container_id: str) -> str:
            return f"nameserver 10.88.0.1 # {self.names[container_id][0]}\n"

    _fake_entry_points(monkeypatch, {"dns": Dns}, group=DNS_GROUP)
    dns = DnsFacade.load("dns")
    dns.start(NyxSettings())
    dns.register("c1", "web", [], [], ["nyx", "back"], ["back"])
    assert dns.resolv_conf("c1") == "nameserver 10.88.0.1 # web\n"
    (impl,) = [p for p in dns.pm.get_plugins()]
    assert impl.names == {"c1": ("web", ["back"])}
    dns.deregister("c1")
    assert impl.names == {}


def test_installed_plugins_report_versions() -> None:
    found = {(p.group, p.name): p for p in installed_plugins()}
    assert (DRIVER_GROUP, "loopback") in found
    assert found[(DRIVER_GROUP, "loopback")].distribution == "nyx-driver-loopback"
    assert found[(DRIVER_GROUP, "loopback")].version == "0.1.0"


def test_core_alone_imports_no_driver_or_daemon_dependencies() -> None:
    """``import nyx_core`` (and loading a driver through it) pulls no HTTP, TLS, registry,
    daemon or plugin code of its own: nyx-core is the contract only. (loguru and
    pydantic-settings, two of its four dependencies, import asyncio and with it ssl; that
    is theirs, so the check compares against importing those dependencies alone.)"""
    code = (
        "import sys;"
        "import pluggy, pydantic, pydantic_settings, loguru;"
        "base = set(sys.modules);"
        "import nyx_core, nyx_core.hookspecs, nyx_core.testing;"
        "from nyx_core import NetworkBackend;"
        "NetworkBackend.load('loopback');"
        "heavy = ('pyroute2', 'dnslib', 'click', 'httpx', 'h11', 'ssl', 'http', 'yaml',"
        " 'nyx_cli', 'nyx_plugins_native', 'nyx_plugins_cni', 'nyx_dns_embedded');"
        "bad = sorted(m for m in set(sys.modules) - base if m.split('.')[0] in heavy);"
        "bad += [m for m in ('http', 'http.client', 'httpx', 'nyx_cli') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_core_declares_only_the_contract_dependencies() -> None:
    from importlib.metadata import requires

    deps = {
        r.split(";")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
        for r in requires("nyx-core") or []
        if "extra ==" not in r
    }
    assert deps == {"pluggy", "pydantic", "pydantic-settings", "loguru"}
