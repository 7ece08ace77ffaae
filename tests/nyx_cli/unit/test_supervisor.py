"""The supervisor with fakes at nyx's own boundary: a fake driver and DNS provider loaded
through the real facades, and a fake host (images, rootfs, runc, netns). No root needed."""

from __future__ import annotations

import ipaddress
import json
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from nyx_cli.daemon._faults import Faults
from nyx_cli.daemon._models import ContainerSpec, NetworkAttachment
from nyx_cli.daemon._settings import DaemonSettings
from nyx_cli.daemon._state import ContainerRecord, StateStore
from nyx_cli.daemon._supervisor import Host, Supervisor
from nyx_cli.errors import CommandError, ConflictError, NotFoundError, RuntimeErrorNyx
from nyx_core import (
    BackendCapabilities,
    BackendError,
    ConfigError,
    DnsFacade,
    InterfaceResult,
    NetworkBackend,
    NetworkInfo,
    NetworkSpec,
    NyxSettings,
    PortMapping,
    SetupOptions,
    SetupResult,
    TeardownError,
    hookimpl,
    make_plugin_manager,
)


class Calls(list[tuple[Any, ...]]):
    def names(self) -> list[str]:
        return [c[0] for c in self]


class FakeBackend:
    def __init__(self, calls: Calls) -> None:
        self.calls = calls
        self.n = 1
        self.fail_setup = False
        self.refuse: dict[str, str] = {}  # network name -> the driver's error
        self.fail_remove = False
        self.made: dict[str, NetworkSpec] = {}

    @hookimpl
    def nyx_backend_network_create(self, network: NetworkSpec) -> NetworkInfo:
        self.calls.append(("net_create", network))
        if network.name in self.refuse:
            raise ConfigError(self.refuse[network.name])
        self.made[network.name] = network
        return NetworkInfo(
            name=network.name,
            subnet=network.subnet,
            gateway=network.gateway,
            internal=network.internal,
            interface=f"br-{network.name}",
            options=dict(network.options),
            labels=dict(network.labels),
            extra={"mtu": network.options.get("mtu")},
        )

    @hookimpl
    def nyx_backend_network_remove(self, name: str) -> Any:
        self.calls.append(("net_remove", name))
        if self.fail_remove:
            raise TeardownError(f"network {name!r}", [OSError("bridge busy")])
        self.made.pop(name, None)
        return True

    @hookimpl
    def nyx_backend_ensure_network(self, settings: NyxSettings, options: Any) -> Any:
        self.calls.append(("ensure",))
        return True

    @hookimpl
    def nyx_backend_setup(
        self, container_id: str, netns_path: str, ports: Any, opts: SetupOptions
    ) -> Any:
        if self.fail_setup:
            raise BackendError("setup exploded")
        self.n += 1
        self.calls.append(("setup", container_id, netns_path, list(ports), opts))
        addr = ipaddress.ip_interface(f"10.231.0.{self.n}/24")
        return SetupResult(
            container_id=container_id,
            network=opts.network,
            interfaces=[InterfaceResult(name=opts.interface, addresses=[addr])],
            gateway=opts.subnet.ip if opts.subnet else ipaddress.ip_address("10.231.0.1"),
        )

    @hookimpl
    def nyx_backend_teardown(self, container_id: str, netns_path: str) -> Any:
        self.calls.append(("teardown", container_id, netns_path))
        return True


class FakeDns:
    def __init__(self, calls: Calls) -> None:
        self.calls = calls
        self.internal: dict[str, list[str]] = {}

    @hookimpl
    def nyx_dns_start(self, settings: NyxSettings) -> Any:
        self.calls.append(("dns_start",))
        return True

    @hookimpl
    def nyx_dns_stop(self) -> Any:
        self.calls.append(("dns_stop",))
        return True

    @hookimpl
    def nyx_dns_register(
        self,
        container_id: str,
        hostname: str,
        ips: Any,
        aliases: Any,
        networks: Any,
        internal_networks: Any,
    ) -> Any:
        self.calls.append(
            ("register", container_id, hostname, list(ips), list(aliases), list(networks))
        )
        self.internal[container_id] = list(internal_networks)
        return True

    @hookimpl
    def nyx_dns_deregister(self, container_id: str) -> Any:
        self.calls.append(("deregister", container_id))
        return True

    @hookimpl
    def nyx_dns_resolv_conf(self, container_id: str) -> str:
        return "nameserver 10.231.0.1\nsearch nyxd.local\n"


class Img:
    def __init__(self, ref: str) -> None:
        self.id = "sha256:" + "ab" * 32
        self.repo_tags = [ref]
        self.config = {"Cmd": ["sh"]}
        self.digest = None
        self.size = 10
        self.created = None


class FakeImages:
    def __init__(self) -> None:
        self.images = {"busybox:nyx": Img("busybox:nyx")}

    def get(self, ref: str) -> Any:
        if ref not in self.images:
            raise NotFoundError(f"no such image: {ref}")
        return self.images[ref]

    def list(self) -> list[Any]:
        return list(self.images.values())

    def load(self, path: Path) -> list[Any]:
        return [Img("loaded:1")]

    def import_oci_layout(self, layout: Path, reference: str) -> Any:
        return Img(reference)

    def remove(self, ref: str) -> None:
        self.images.pop(ref)

    def layer_dirs(self, image: Any) -> list[Path]:
        return [Path("/layers/0")]


class FakeRootfs:
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def mount(self, layer_dirs: Any, container_dir: Path) -> Path:
        self.calls.append(("mount", container_dir))
        return container_dir / "merged"

    def unmount(self, container_dir: Path) -> None:
        self.calls.append(("unmount", container_dir))


class FakeRuntime:
    """Containers 'run' until :meth:`exit` or a signal they honour."""

    def __init__(self, calls: Calls) -> None:
        self.calls = calls
        self.exits: dict[str, threading.Event] = {}
        self.codes: dict[str, int] = {}
        self.ignore_term: set[str] = set()
        self.fail_start: str | None = None
        self.bundles: dict[str, dict[str, Any]] = {}
        self.deleted: set[str] = set()
        self.lists = 0
        self.states = 0
        self.list_fails = False

    def write_bundle(self, bundle: Path, **kw: Any) -> None:
        self.calls.append(("bundle", bundle))
        self.bundles[bundle.parent.name] = kw
        self.last = kw

    def start(self, container_id: str, bundle: Path, log_path: Path) -> int:
        if self.fail_start:
            raise RuntimeErrorNyx(self.fail_start)
        self.calls.append(("start", container_id))
        self.deleted.discard(container_id)
        self.exits[container_id] = threading.Event()
        log_path.write_text("hello from " + container_id[:12] + "\n")
        return 4242

    def exit(self, cid: str, code: int) -> None:
        self.codes[cid] = code
        self.exits[cid].set()

    def wait(self, container_id: str, pid: int, timeout: float | None) -> int | None:
        self.exits[container_id].wait(timeout)
        return self.codes.get(container_id)

    def kill(self, container_id: str, sig: int) -> None:
        self.calls.append(("kill", container_id, sig))
        if container_id not in self.exits:
            return
        if sig == signal.SIGKILL:
            self.exit(container_id, 137)
        elif container_id not in self.ignore_term:
            self.exit(container_id, 143)

    def state(self, container_id: str) -> Any:
        self.states += 1
        ev = self.exits.get(container_id)
        if ev is None or ev.is_set():
            return {"status": "stopped"}
        return {"status": "running", "pid": 4242}

    def delete(self, container_id: str, force: bool) -> None:
        self.calls.append(("runc_delete", container_id))
        self.deleted.add(container_id)

    def list(self) -> list[Any]:
        """What ``runc list`` shows: every container started and not deleted, its state."""
        self.lists += 1
        if self.list_fails:
            raise RuntimeErrorNyx("runc list: broken")
        states = [{"id": c, **self.state(c)} for c in self.exits if c not in self.deleted]
        self.states -= len(states)  # a state of its own, not asked per container
        return states


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def parts(calls: Calls) -> dict[str, Any]:
    return {
        "backend": FakeBackend(calls),
        "dns": FakeDns(calls),
        "images": FakeImages(),
        "rootfs": FakeRootfs(calls),
        "runtime": FakeRuntime(calls),
    }


def make_host(parts: dict[str, Any], calls: Calls) -> Host:
    def create_netns(p: Path) -> None:
        calls.append(("netns_create", p))

    def delete_netns(p: Path) -> None:
        calls.append(("netns_delete", p))

    def process_from_image(config: Any, *args: Any) -> Any:
        return {"config": config, "args": args}

    return Host(
        images=parts["images"],
        rootfs=parts["rootfs"],
        runtime=parts["runtime"],
        process_from_image=process_from_image,
        create_netns=create_netns,
        delete_netns=delete_netns,
    )


class FakeCapabilities:
    """What the fake driver declares: like cni (its own DNS) when named so."""

    def __init__(self, driver: str, lifecycle: bool = True) -> None:
        self.caps = BackendCapabilities(
            publishes_ports=True,
            multiple_networks=True,
            external_dns=driver == "cni",
            network_lifecycle=lifecycle,
        )

    @hookimpl
    def nyx_backend_capabilities(self) -> BackendCapabilities:
        return self.caps


def make_sup(
    tmp_path: Path,
    parts: dict[str, Any],
    calls: Calls,
    driver: str = "fake",
    dns_mode: str = "auto",
    with_dns: bool = True,
    lifecycle: bool = True,
) -> Supervisor:
    settings = DaemonSettings(
        state_dir=tmp_path / "state",
        run_dir=tmp_path / "run",
        socket=tmp_path / "run" / "nyxd.sock",
        container_subnet="10.231.0.0/24",
        gateway_ip="10.231.0.1",
        dns=dns_mode,
    )
    pm = make_plugin_manager()
    pm.register(parts["backend"])
    pm.register(FakeCapabilities(driver, lifecycle))
    backend = NetworkBackend(pm, driver)
    dns = None
    if with_dns:
        dpm = make_plugin_manager()
        dpm.register(parts["dns"])
        dns = DnsFacade(dpm, "embedded")
    return Supervisor(settings, backend, dns, make_host(parts, calls), stop_grace=0.5)


@pytest.fixture
def sup(tmp_path: Path, parts: dict[str, Any], calls: Calls) -> Supervisor:
    return make_sup(tmp_path, parts, calls)


def spec(**kw: Any) -> ContainerSpec:
    return ContainerSpec(image="busybox:nyx", **kw)


def test_run_does_every_step_in_order(sup: Supervisor, calls: Calls, tmp_path: Path) -> None:
    c = sup.create(spec(name="web", hostname="web", ports=[PortMapping.parse("8080:80")]))
    assert c["state"] == "running"
    assert c["pid"] == 4242
    assert c["ips"] == ["10.231.0.2"]
    assert c["ports"] == ["8080:80/tcp"]
    assert calls.names() == ["netns_create", "setup", "register", "mount", "bundle", "start"]
    setup = calls[1]
    assert setup[2] == str(tmp_path / "run" / "netns" / c["id"])
    assert setup[4].interface == "eth0" and setup[4].subnet is None
    assert setup[4].hostname == "web"
    assert calls[2][2] == "web" and calls[2][3] == [ipaddress.ip_address("10.231.0.2")]
    cdir = tmp_path / "run" / "containers" / c["id"]
    assert (cdir / "resolv.conf").read_text().startswith("nameserver 10.231.0.1")
    assert (cdir / "hostname").read_text() == "web\n"
    assert "10.231.0.2\tweb" in (cdir / "hosts").read_text()
    mounts = sup.host.runtime.last["mounts"]  # type: ignore[attr-defined]
    assert [m[1] for m in mounts] == ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"]


def test_exit_by_itself_tears_down_in_reverse(
    sup: Supervisor, parts: dict[str, Any], calls: Calls
) -> None:
    c = sup.create(spec())
    calls.clear()
    parts["runtime"].exit(c["id"], 3)
    assert sup.wait(c["id"], timeout=5) == {"exit_code": 3, "state": "exited"}
    # the exact reverse of the start: start, mount(+bundle), register, setup, netns_create
    assert calls.names() == ["runc_delete", "unmount", "deregister", "teardown", "netns_delete"]
    got = sup.get(c["id"])
    assert got["state"] == "exited" and got["exit_code"] == 3 and got["finished"]


def test_stop_sends_sigterm_then_sigkill(
    sup: Supervisor, parts: dict[str, Any], calls: Calls
) -> None:
    c = sup.create(spec())
    parts["runtime"].ignore_term.add(c["id"])
    out = sup.stop(c["id"], timeout=0.2)
    assert out["state"] == "stopped" and out["exit_code"] == 137
    kills = [x[2] for x in calls if x[0] == "kill"]
    assert kills == [signal.SIGTERM, signal.SIGKILL]
    assert "teardown" in calls.names()


def test_stop_honoured_sigterm(sup: Supervisor, calls: Calls) -> None:
    c = sup.create(spec())
    assert sup.stop(c["name"], timeout=5)["exit_code"] == 143
    assert [x[2] for x in calls if x[0] == "kill"] == [signal.SIGTERM]


def test_failure_half_way_undoes_and_forgets(
    sup: Supervisor, parts: dict[str, Any], calls: Calls
) -> None:
    parts["runtime"].fail_start = "container_linux.go: something broke"
    with pytest.raises(RuntimeErrorNyx, match="something broke"):
        sup.create(spec(name="x"))
    assert calls.names() == [
        "netns_create",
        "setup",
        "register",
        "mount",
        "bundle",
        "runc_delete",
        "unmount",
        "deregister",
        "teardown",
        "netns_delete",
    ]
    assert sup.list_containers(all=True) == []
    assert not list((sup.store.containers_dir).iterdir())


def test_backend_failure_undoes_netns(sup: Supervisor, parts: dict[str, Any], calls: Calls) -> None:
    parts["backend"].fail_setup = True
    with pytest.raises(BackendError, match="setup exploded"):
        sup.create(spec())
    assert calls.names() == ["netns_create", "teardown", "netns_delete"]


def test_command_not_found_is_127(sup: Supervisor, parts: dict[str, Any]) -> None:
    parts["runtime"].fail_start = 'exec: "nope": executable file not found in $PATH'
    with pytest.raises(CommandError) as info:
        sup.create(spec(command=["nope"]))
    assert info.value.exit_code == 127


def test_names_unique_and_lookup(sup: Supervisor) -> None:
    c = sup.create(spec(name="one"))
    with pytest.raises(ConflictError, match="'one'"):
        sup.create(spec(name="one"))
    assert sup.get("one")["id"] == c["id"]
    assert sup.get(c["id"][:10])["id"] == c["id"]
    with pytest.raises(NotFoundError, match="nope"):
        sup.get("nope")


def test_unknown_image_is_not_found(sup: Supervisor, calls: Calls) -> None:
    with pytest.raises(NotFoundError, match="no such image: alpine"):
        sup.create(ContainerSpec(image="alpine"))
    assert calls == []


def test_rm_running_needs_force(sup: Supervisor, calls: Calls) -> None:
    c = sup.create(spec(name="r"))
    with pytest.raises(ConflictError, match="running"):
        sup.remove("r")
    sup.remove("r", force=True)
    assert sup.list_containers(all=True) == []
    assert [x[2] for x in calls if x[0] == "kill"] == [signal.SIGKILL]
    assert not sup.store.container_dir(c["id"]).exists()


def test_autoremove_keeps_exit_code_for_wait(sup: Supervisor, parts: dict[str, Any]) -> None:
    c = sup.create(spec(rm=True))
    parts["runtime"].exit(c["id"], 7)
    assert sup.wait(c["id"], timeout=5)["exit_code"] == 7
    for _ in range(100):
        if not sup.list_containers(all=True):
            break
        threading.Event().wait(0.01)
    assert sup.list_containers(all=True) == []
    assert sup.wait(c["id"])["exit_code"] == 7


def test_dns_off_for_one_container_no_resolv_conf(
    sup: Supervisor, calls: Calls, tmp_path: Path
) -> None:
    c = sup.create(spec(dns=False))
    assert "register" not in calls.names()
    assert not (tmp_path / "run" / "containers" / c["id"] / "resolv.conf").exists()
    mounts = sup.host.runtime.last["mounts"]  # type: ignore[attr-defined]
    assert "/etc/resolv.conf" not in [m[1] for m in mounts]


def test_daemon_dns_off_no_register(tmp_path: Path, parts: dict[str, Any], calls: Calls) -> None:
    s = make_sup(tmp_path, parts, calls, dns_mode="off", with_dns=False)
    s.create(spec())
    assert "register" not in calls.names()
    mounts = s.host.runtime.last["mounts"]  # type: ignore[attr-defined]
    assert "/etc/resolv.conf" not in [m[1] for m in mounts]


def test_cni_auto_uses_cni_resolv_conf_but_internal_stack_registers(
    tmp_path: Path, parts: dict[str, Any], calls: Calls
) -> None:
    s = make_sup(tmp_path, parts, calls, driver="cni")
    s.create(spec())
    assert "register" not in calls.names()
    stack = {"db": {"networks": [{"name": "back", "internal": True}]}}
    s.create_network("back", internal=True)
    s.create(
        spec(
            networks=[NetworkAttachment(name="back", internal=True, aliases=["db"])],
            stack="p",
            stack_services=stack,
        )
    )
    reg = [x for x in calls if x[0] == "register"]
    assert len(reg) == 1 and reg[0][4] == ["db"] and reg[0][5] == ["back"]
    # the provider is told "back" is internal for this container (no forwarding)
    assert parts["dns"].internal[reg[0][1]] == ["back"]


def test_cni_auto_stack_on_a_network_created_internal_counts_as_internal(
    tmp_path: Path, parts: dict[str, Any], calls: Calls, nyx_hook_recorder: Any
) -> None:
    """The DNS policy reads "internal" the same way as everything else: a stack whose only
    network was created internal (not marked in the stack) is an internal stack."""
    s = make_sup(tmp_path, parts, calls, driver="cni")
    assert s.dns is not None
    recorder = nyx_hook_recorder(s.dns.pm)
    s.create_network("back", internal=True)
    stack = {"db": {"networks": [{"name": "back"}]}}
    s.create(spec(networks=[NetworkAttachment(name="back")], stack="p", stack_services=stack))
    (reg,) = _dns_registrations(recorder)
    assert reg["internal_networks"] == ["back"]


def test_networks_allocate_distinct_24s_and_attach(sup: Supervisor, calls: Calls) -> None:
    a = sup.create_network("front")
    b = sup.create_network("back", internal=True)
    assert (a["subnet"], a["gateway"]) == ("10.89.0.0/24", "10.89.0.1/24")
    assert b["subnet"] == "10.89.1.0/24" and b["internal"]
    with pytest.raises(ConflictError):
        sup.create_network("front")
    with pytest.raises(ConflictError, match="overlaps"):
        sup.create_network("x", subnet="10.89.0.128/25")
    with pytest.raises(ConfigError):
        sup.create_network("bad name")
    c = sup.create(spec(networks=[NetworkAttachment(name="front"), NetworkAttachment(name="back")]))
    setups = [x[4] for x in calls if x[0] == "setup"]
    assert [(o.network, o.interface, str(o.subnet), o.internal) for o in setups] == [
        ("front", "eth0", "10.89.0.1/24", False),
        ("back", "eth1", "10.89.1.1/24", True),
    ]
    assert c["networks"] == ["front", "back"]
    with pytest.raises(ConflictError, match="in use"):
        sup.remove_network("back")
    sup.remove(c["id"], force=True)
    sup.remove_network("back")
    assert [n["name"] for n in sup.list_networks()] == ["nyx", "front"]
    with pytest.raises(NotFoundError):
        sup.create(spec(network="nowhere"))


def _dns_registrations(recorder: Any) -> list[dict[str, Any]]:
    return [c.kwargs for c in recorder.calls if c.name == "nyx_dns_register"]


def test_internal_spec_is_one_decision_for_firewall_and_dns(
    sup: Supervisor, calls: Calls, nyx_hook_recorder: Any
) -> None:
    """Issue 11 item 5: ``"internal": true`` in the spec (default network) drops egress in
    the driver *and* stops DNS forwarding: both read the value recorded at create."""
    assert sup.dns is not None
    recorder = nyx_hook_recorder(sup.dns.pm)
    c = sup.create(spec(internal=True))
    opts = [x[4] for x in calls if x[0] == "setup"]
    assert [(o.network, o.internal) for o in opts] == [("nyx", True)]
    (reg,) = _dns_registrations(recorder)
    assert reg["networks"] == ["nyx"] and reg["internal_networks"] == ["nyx"]
    rec = sup.store.load_all()[0][0]
    assert rec.id == c["id"] and rec.internal_networks == ["nyx"]
    # a container on the same network that did not ask for it is not internal
    sup.create(spec())
    assert [x[4].internal for x in calls if x[0] == "setup"] == [True, False]
    assert _dns_registrations(recorder)[1]["internal_networks"] == []


def test_internal_attachment_or_network_is_one_decision(
    sup: Supervisor, calls: Calls, nyx_hook_recorder: Any
) -> None:
    """``networks[].internal`` of the spec and a network created internal count alike."""
    assert sup.dns is not None
    recorder = nyx_hook_recorder(sup.dns.pm)
    sup.create_network("front")
    sup.create_network("back")
    sup.create_network("vault", internal=True)
    sup.create(
        spec(
            networks=[
                NetworkAttachment(name="front"),
                NetworkAttachment(name="back", internal=True),
                NetworkAttachment(name="vault"),
            ]
        )
    )
    opts = [x[4] for x in calls if x[0] == "setup"]
    assert [(o.network, o.internal) for o in opts] == [
        ("front", False),
        ("back", True),
        ("vault", True),
    ]
    (reg,) = _dns_registrations(recorder)
    assert reg["networks"] == ["front", "back", "vault"]
    assert reg["internal_networks"] == ["back", "vault"]


def test_readoption_registers_dns_with_the_recorded_internal(
    tmp_path: Path, parts: dict[str, Any], calls: Calls, nyx_hook_recorder: Any
) -> None:
    first = make_sup(tmp_path, parts, calls)
    c = first.create(spec(name="vault", internal=True))
    d = first.create(spec(name="plain"))
    second = make_sup(tmp_path, parts, calls)
    assert second.dns is not None
    recorder = nyx_hook_recorder(second.dns.pm)
    assert second.reconcile()["adopted"] == 2
    got = {r["container_id"]: r["internal_networks"] for r in _dns_registrations(recorder)}
    assert got == {c["id"]: ["nyx"], d["id"]: []}


def test_readoption_reads_the_record_not_the_network_registry(
    tmp_path: Path, parts: dict[str, Any], calls: Calls, nyx_hook_recorder: Any
) -> None:
    first = make_sup(tmp_path, parts, calls)
    c = first.create(spec(name="keep"))
    # what the driver was told at start is what counts, whatever the spec says now
    store = StateStore(tmp_path / "state")
    rec = store.load_all()[0][0]
    rec.internal_networks = ["nyx"]
    store.save(rec)
    second = make_sup(tmp_path, parts, calls)
    assert second.dns is not None
    recorder = nyx_hook_recorder(second.dns.pm)
    assert second.reconcile()["adopted"] == 1
    (reg,) = _dns_registrations(recorder)
    assert reg["container_id"] == c["id"] and reg["internal_networks"] == ["nyx"]


def test_record_of_an_older_nyxd_decides_internal_from_its_spec(
    tmp_path: Path, parts: dict[str, Any], calls: Calls, nyx_hook_recorder: Any
) -> None:
    first = make_sup(tmp_path, parts, calls)
    c = first.create(spec(name="old", internal=True))
    path = first.store.container_dir(c["id"]) / "container.json"
    raw = json.loads(path.read_text())
    del raw["internal_networks"]  # written before the field existed
    path.write_text(json.dumps(raw))
    second = make_sup(tmp_path, parts, calls)
    assert second.dns is not None
    recorder = nyx_hook_recorder(second.dns.pm)
    assert second.reconcile()["adopted"] == 1
    assert _dns_registrations(recorder)[0]["internal_networks"] == ["nyx"]
    assert second.store.load_all()[0][0].internal_networks == ["nyx"]


def test_port_conflict_between_containers(sup: Supervisor) -> None:
    sup.create(spec(ports=[PortMapping.parse("8080:80")]))
    with pytest.raises(ConflictError, match="8080"):
        sup.create(spec(ports=[PortMapping.parse("8080:81")]))
    sup.create(spec(ports=[PortMapping.parse("8080:80/udp")]))


def test_logs_and_follow(sup: Supervisor, parts: dict[str, Any]) -> None:
    c = sup.create(spec())
    assert b"".join(sup.logs(c["id"])).startswith(b"hello from")
    got: list[bytes] = []
    t = threading.Thread(target=lambda: got.extend(sup.logs(c["id"], follow=True, poll=0.01)))
    t.start()
    parts["runtime"].exit(c["id"], 0)
    t.join(5)
    assert not t.is_alive() and b"".join(got).startswith(b"hello")


def test_created_then_started(sup: Supervisor, calls: Calls) -> None:
    c = sup.create(spec(), start=False)
    assert c["state"] == "created" and calls == []
    assert sup.start(c["id"])["state"] == "running"


def test_reconcile_stops_leftovers(tmp_path: Path, parts: dict[str, Any], calls: Calls) -> None:
    store = StateStore(tmp_path / "state")
    rec = ContainerRecord(
        id="c" * 64,
        name="left",
        spec=spec(),
        state="running",
        pid=99999,
        hostname="left",
        netns_path=str(tmp_path / "run" / "netns" / ("c" * 64)),
        network_setup=True,
        dns_registered=True,
        rootfs_mounted=True,
        runc_created=True,
    )
    store.save(rec)
    (tmp_path / "run" / "netns").mkdir(parents=True)
    (tmp_path / "run" / "netns" / ("d" * 64)).touch()  # an orphan without a record
    s = make_sup(tmp_path, parts, calls)
    assert s.reconcile() == {"stopped": 1, "cleaned": 1, "adopted": 0}
    got = s.get("left")
    assert got["state"] == "exited" and "restart" in got["error"]
    names = calls.names()
    assert names[:6] == ["kill", "runc_delete", "unmount", "deregister", "teardown", "netns_delete"]
    assert ("teardown", "d" * 64, str(tmp_path / "run" / "netns" / ("d" * 64))) in calls
    again = StateStore(tmp_path / "state").load_all()[0][0]
    assert not (again.network_setup or again.runc_created or again.rootfs_mounted)


def test_restart_readopts_running_containers(
    tmp_path: Path, parts: dict[str, Any], calls: Calls
) -> None:
    first = make_sup(tmp_path, parts, calls)
    c = first.create(spec(name="keep", hostname="keep"))
    calls.clear()
    # a new nyxd on the same state while the container still runs
    second = make_sup(tmp_path, parts, calls)
    assert second.reconcile() == {"stopped": 0, "cleaned": 0, "adopted": 1}
    assert calls.names() == ["register"]  # DNS records again; nothing torn down
    assert second.get("keep")["state"] == "running"
    parts["runtime"].ignore_term.add(c["id"])
    out = second.stop("keep", timeout=0.1)
    assert out["state"] == "stopped"
    assert [x[2] for x in calls if x[0] == "kill"] == [signal.SIGTERM, signal.SIGKILL]
    assert "teardown" in calls.names()


def test_readoption_asks_the_runtime_once_and_leaves_unchanged_records_alone(
    tmp_path: Path, parts: dict[str, Any], calls: Calls
) -> None:
    """One runtime list for every record, not a state (an exec of runc) per container; an
    adopted container whose record did not change is not written again."""
    first = make_sup(tmp_path, parts, calls)
    made = [first.create(spec(name=f"c{i}")) for i in range(3)]
    files = [first.store.container_dir(c["id"]) / "container.json" for c in made]
    inodes = [f.stat().st_ino for f in files]
    runtime = parts["runtime"]
    runtime.lists = runtime.states = 0
    second = make_sup(tmp_path, parts, calls)
    assert second.reconcile()["adopted"] == 3
    assert (runtime.lists, runtime.states) == (1, 0)
    assert [f.stat().st_ino for f in files] == inodes  # not rewritten (atomic writes rename)
    assert all(second.get(c["id"])["state"] == "running" for c in made)


def test_reconcile_leaves_the_records_of_stopped_containers_alone(
    tmp_path: Path, parts: dict[str, Any], calls: Calls
) -> None:
    """Nothing to undo, nothing changed: a stopped container's record is not written again
    at every start of nyxd (a thousand of them would be a thousand writes)."""
    first = make_sup(tmp_path, parts, calls)
    made = [first.create(spec(name=f"c{i}")) for i in range(3)]
    for c in made:
        first.stop(c["id"], timeout=0)
    files = [first.store.container_dir(c["id"]) / "container.json" for c in made]
    inodes = [f.stat().st_ino for f in files]
    second = make_sup(tmp_path, parts, calls)
    assert second.reconcile() == {"stopped": 0, "cleaned": 0, "adopted": 0}
    assert [f.stat().st_ino for f in files] == inodes
    assert {second.get(c["id"])["state"] for c in made} == {"stopped"}


def test_readoption_asks_per_container_when_the_runtime_cannot_list(
    tmp_path: Path, parts: dict[str, Any], calls: Calls
) -> None:
    first = make_sup(tmp_path, parts, calls)
    first.create(spec(name="a"))
    first.create(spec(name="b"))
    runtime = parts["runtime"]
    runtime.list_fails = True
    runtime.states = 0
    second = make_sup(tmp_path, parts, calls)
    assert second.reconcile()["adopted"] == 2
    assert runtime.states == 2


def test_restart_stops_a_container_whose_netns_mount_is_gone(
    tmp_path: Path, parts: dict[str, Any], calls: Calls
) -> None:
    first = make_sup(tmp_path, parts, calls)
    c = first.create(spec(name="lost"))
    calls.clear()
    second = make_sup(tmp_path, parts, calls)
    second.host.netns_alive = lambda path: False
    assert second.reconcile() == {"stopped": 1, "cleaned": 1, "adopted": 0}
    assert calls.names()[:4] == ["kill", "runc_delete", "unmount", "deregister"]
    assert second.get(c["id"])["state"] == "exited"


def test_shutdown_stops_everything(sup: Supervisor, calls: Calls) -> None:
    sup.create(spec())
    sup.create(spec())
    sup.shutdown(grace=1)
    assert all(c["state"] == "stopped" for c in sup.list_containers(all=True))
    assert calls.names().count("teardown") == 2
    with pytest.raises(ConflictError, match="shutting down"):
        sup.create(spec())


def test_images(sup: Supervisor, parts: dict[str, Any]) -> None:
    assert sup.list_images()[0]["repo_tags"] == ["busybox:nyx"]
    assert sup.load_image(Path("x.tar"))[0]["repo_tags"] == ["loaded:1"]
    c = sup.create(spec())
    with pytest.raises(ConflictError, match="used by"):
        sup.remove_image("busybox:nyx")
    sup.remove(c["id"], force=True)
    sup.remove_image("busybox:nyx")
    assert sup.list_images() == []


def test_labels_filter(sup: Supervisor) -> None:
    sup.create(spec(labels={"nyx.stack": "a"}))
    sup.create(spec(labels={"nyx.stack": "b"}))
    assert len(sup.list_containers(labels={"nyx.stack": "a"})) == 1
    assert len(sup.list_containers(labels={"nyx.stack": None})) == 2
    info = sup.info()
    assert info["driver"] == "fake" and info["containers"] == 2 and info["running"] == 2


def test_daemon_serves_then_stops_everything(
    tmp_path: Path, parts: dict[str, Any], calls: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    from nyx_cli.daemon._serve import serve

    s = make_sup(tmp_path, parts, calls)  # for its settings, backend and DNS facades
    notify = tmp_path / "notify"
    got: list[bytes] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as ns:
        ns.bind(str(notify))
        monkeypatch.setenv("NOTIFY_SOCKET", str(notify))
        stop = threading.Event()
        ready = threading.Event()
        t = threading.Thread(
            target=serve,
            args=(s.settings, s.backend, s.dns),
            kwargs={"host": s.host, "stop_event": stop, "ready": lambda sup: ready.set()},
        )
        t.start()
        try:
            assert ready.wait(10)
            got.append(ns.recv(100))
            with socket.socket(socket.AF_UNIX) as c:
                c.connect(str(s.settings.socket))
                body = json.dumps({"image": "busybox:nyx"}).encode()
                c.sendall(
                    b"POST /v1/containers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                reply = b""
                while chunk := c.recv(65536):
                    reply += chunk
            assert reply.startswith(b"HTTP/1.1 201")
        finally:
            stop.set()
            t.join(30)
    assert not t.is_alive()
    assert got == [b"READY=1\nSTATUS=serving"]
    names = calls.names()
    assert names[:3] == ["ensure", "net_create", "dns_start"]  # the default network first
    assert names.index("start") < names.index("teardown") < names.index("dns_stop")
    assert not s.settings.socket.exists()


# ------------------------------------------------------------------ the steps


class RecordingFaults(Faults):
    """Records every checkpoint instead of killing nyxd; raises at ``fail_at``."""

    def __init__(self, fail_at: str | None = None) -> None:
        super().__init__()
        self.seen: list[str] = []
        self.fail_at = fail_at

    def hit(self, point: str) -> None:
        self.seen.append(point)
        if point == self.fail_at:
            raise RuntimeErrorNyx(f"injected at {point}")


UNDO = {  # what undoing each step does on the fakes
    "netns": "netns_delete",
    "network": "teardown",
    "dns": "deregister",
    "rootfs": "unmount",
    "runtime": "runc_delete",
}


@pytest.mark.parametrize("failing", ["network", "dns", "etc", "rootfs", "runtime"])
def test_a_failure_at_each_step_undoes_exactly_what_began(
    tmp_path: Path, parts: dict[str, Any], calls: Calls, failing: str
) -> None:
    """The steps run in order with a checkpoint before each; a failure at one undoes the
    steps already begun, in reverse, and leaves nothing recorded as begun."""
    s = make_sup(tmp_path, parts, calls)
    s.faults = RecordingFaults(fail_at=f"start:{failing}")
    order = ["netns", "network", "dns", "etc", "rootfs", "runtime"]
    with pytest.raises(RuntimeErrorNyx, match=f"injected at start:{failing}"):
        s.create(spec())
    began = order[: order.index(failing)]
    assert s.faults.seen == ["create:recorded", *(f"start:{n}" for n in [*began, failing])]
    undone = [n for n in calls.names() if n in UNDO.values()]
    assert undone == [UNDO[n] for n in reversed(began) if n in UNDO]
    rec = s.store.load_all()[0]
    assert rec == [] or not (
        rec[0].netns_path or rec[0].network_setup or rec[0].dns_registered or rec[0].runc_created
    )


def test_teardown_hits_an_undo_checkpoint_per_begun_step(
    tmp_path: Path, parts: dict[str, Any], calls: Calls
) -> None:
    s = make_sup(tmp_path, parts, calls)
    c = s.create(spec())
    s.faults = RecordingFaults()
    s.stop(c["id"], timeout=0)
    assert s.faults.seen == [
        "stop:signal",
        "exit:teardown",
        "undo:runtime",
        "undo:rootfs",
        "undo:dns",
        "undo:network",
        "undo:netns",
        "exit:recorded",
    ]
    s.faults = RecordingFaults()
    s.remove(c["id"])
    assert s.faults.seen == ["rm:teardown", "rm:forget"]  # nothing left to undo


class MeetingBackend(FakeBackend):
    """Setups and teardowns that return only once two of them are in the driver at once
    (a :class:`threading.Barrier`): nyxd serializing them breaks the barrier."""

    def __init__(self, calls: Calls) -> None:
        super().__init__(calls)
        self.meet = threading.Barrier(2, timeout=10)
        self.inside = 0
        self.most = 0
        self.count_lock = threading.Lock()
        self.hold = 0.0  # seconds each teardown stays inside

    @hookimpl
    def nyx_backend_setup(
        self, container_id: str, netns_path: str, ports: Any, opts: SetupOptions
    ) -> Any:
        self.meet.wait()
        return super().nyx_backend_setup(container_id, netns_path, ports, opts)

    @hookimpl
    def nyx_backend_teardown(self, container_id: str, netns_path: str) -> Any:
        with self.count_lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
        try:
            if self.hold:
                threading.Event().wait(self.hold)
            else:
                self.meet.wait()
            return super().nyx_backend_teardown(container_id, netns_path)
        finally:
            with self.count_lock:
                self.inside -= 1


def _in_threads(*jobs: Any) -> list[Any]:
    out: list[Any] = [None] * len(jobs)

    def run(i: int) -> None:
        try:
            out[i] = jobs[i]()
        except Exception as exc:
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


def test_network_setups_and_teardowns_of_two_containers_run_at_once(
    tmp_path: Path, parts: dict[str, Any], calls: Calls
) -> None:
    """The driver, not nyxd, keeps parallel setups apart (the kit checks drivers do): one
    container's setup never waits for another's, so a slow one holds up nobody."""
    parts["backend"] = backend = MeetingBackend(calls)
    sup = make_sup(tmp_path, parts, calls)
    made = _in_threads(lambda: sup.create(spec()), lambda: sup.create(spec()))
    assert all(isinstance(c, dict) for c in made), made
    assert not backend.meet.broken
    stopped = _in_threads(*[lambda c=c: sup.stop(c["id"], timeout=0) for c in made])
    assert [s["state"] for s in stopped] == ["stopped", "stopped"], stopped
    assert calls.names().count("teardown") == 2 and not backend.meet.broken


def test_teardowns_after_a_shutdown_run_a_few_at_a_time(
    tmp_path: Path, parts: dict[str, Any], calls: Calls
) -> None:
    """Hundreds of containers ending at once (a shutdown) are torn down by a bounded
    number of threads at a time; every one of them still is."""
    from nyx_cli.daemon._supervisor import _PARALLEL_TEARDOWNS

    parts["backend"] = backend = MeetingBackend(calls)
    backend.meet = threading.Barrier(1)  # setups go through alone
    backend.hold = 0.05
    sup = make_sup(tmp_path, parts, calls)
    n = _PARALLEL_TEARDOWNS + 6
    for _ in range(n):
        sup.create(spec())
    sup.shutdown(grace=0)
    assert calls.names().count("teardown") == n
    assert all(c["state"] == "stopped" for c in sup.list_containers(all=True))
    assert 1 <= backend.most <= _PARALLEL_TEARDOWNS
