"""A container's networking keys in the supervisor (issue 14): static addresses, /etc/hosts,
resolv.conf, domainname, sysctls, expose and ``network_mode`` host / none / container:.
The fake driver, DNS and host of test_supervisor."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import test_supervisor as ts
from pydantic import ValidationError
from test_supervisor import Calls, make_sup, spec

from nyx_cli.daemon._models import NetworkAttachment
from nyx_cli.daemon._steps import resolv_conf_with
from nyx_cli.daemon._supervisor import Supervisor
from nyx_cli.errors import ConflictError, NotFoundError
from nyx_core import ConfigError

calls, parts, sup = ts.calls, ts.parts, ts.sup


def _with_caps(s: Supervisor, **caps: bool) -> Supervisor:
    s.backend._caps = s.backend.capabilities().model_copy(update=caps)
    return s


def _recording_host(s: Supervisor, calls: Calls) -> None:
    s.host.loopback_up = lambda path: calls.append(("lo_up", path))
    s.host.set_sysctls = lambda path, values: calls.append(("sysctls", path, dict(values)))


def _cdir(s: Supervisor, cid: str) -> Path:
    return s.run_dir / "containers" / cid


# ------------------------------------------------------------------ static addresses


def test_static_address_and_mac_reach_the_driver(sup: Supervisor, calls: Calls) -> None:
    _with_caps(sup, static_addresses=True)
    sup.create_network("back", subnet="10.89.7.0/24")
    sup.create(spec(name="a", ipv4_address="10.231.0.50", mac_address="02:42:AC:11:00:02"))
    sup.create(
        spec(
            name="b",
            networks=[
                NetworkAttachment(name="nyx"),
                NetworkAttachment(name="back", ipv4_address="10.89.7.9"),
            ],
        )
    )
    opts = [c[4] for c in calls if c[0] == "setup"]
    assert [(str(o.static_ip) if o.static_ip else None, o.mac) for o in opts] == [
        ("10.231.0.50", "02:42:ac:11:00:02"),
        (None, None),
        ("10.89.7.9", None),
    ]


def test_static_address_on_a_driver_that_cannot_is_refused_before_anything(
    sup: Supervisor, calls: Calls
) -> None:
    with pytest.raises(ConfigError, match=r"ipv4_address '10.231.0.50': .*'fake'.*static_add"):
        sup.create(spec(name="a", ipv4_address="10.231.0.50"))
    nets = [NetworkAttachment(name="nyx", mac_address="02:00:00:00:00:01")]
    with pytest.raises(ConfigError, match=r"networks\[0\].mac_address '02:00:00:00:00:01'"):
        sup.create(spec(name="b", networks=nets))
    assert calls == [] and sup.list_containers(all=True) == []


def test_bad_addresses_name_the_field() -> None:
    with pytest.raises(ValidationError, match="ipv4_address '10.0.0.300' is not an IPv4"):
        spec(ipv4_address="10.0.0.300")
    with pytest.raises(ValidationError, match="ipv4_address 'fd00::1' is not an IPv4"):
        NetworkAttachment(ipv4_address="fd00::1")
    with pytest.raises(ValidationError, match="mac_address '01:00:5e:00:00:01' is a multicast"):
        spec(mac_address="01:00:5e:00:00:01")
    with pytest.raises(ValidationError, match=r"give it on the network \(networks\[\].ipv4"):
        spec(ipv4_address="10.231.0.5", networks=[NetworkAttachment()])


# ------------------------------------------------------------------ /etc files


def test_extra_hosts_and_domainname_land_in_hosts(sup: Supervisor) -> None:
    c = sup.create(
        spec(
            name="web",
            hostname="web",
            domainname="example.test",
            extra_hosts=["db.local:10.1.2.3", "v6=::1", "host.docker.internal:host-gateway"],
        )
    )
    hosts = (_cdir(sup, c["id"]) / "hosts").read_text().splitlines()
    assert hosts[2:] == [
        "10.231.0.2\tweb.example.test web",
        "10.1.2.3\tdb.local",
        "::1\tv6",
        "10.231.0.1\thost.docker.internal",
    ]
    bundle = sup.host.runtime.last  # type: ignore[attr-defined]
    assert bundle["sysctl"] == {"kernel.domainname": "example.test"}


def test_host_gateway_is_the_first_networks_gateway(sup: Supervisor) -> None:
    sup.create_network("back", subnet="10.89.7.0/24", gateway="10.89.7.254")
    c = sup.create(spec(networks=[NetworkAttachment(name="back")], extra_hosts=["gw:host-gateway"]))
    assert "10.89.7.254\tgw" in (_cdir(sup, c["id"]) / "hosts").read_text()


def test_dns_options_follow_embedded_dns(sup: Supervisor) -> None:
    c = sup.create(
        spec(dns_servers=["192.0.2.53"], dns_search=["corp.test"], dns_options=["ndots:2"])
    )
    assert (_cdir(sup, c["id"]) / "resolv.conf").read_text() == (
        "nameserver 10.231.0.1\nnameserver 192.0.2.53\nsearch nyxd.local corp.test\n"
        "options ndots:2\n"
    )


def test_dns_options_replace_the_host_resolv_conf_without_embedded_dns(
    tmp_path: Path, parts: dict[str, Any], calls: Calls
) -> None:
    s = make_sup(tmp_path, parts, calls, with_dns=False)
    c = s.create(spec(dns_servers=["192.0.2.53", "2001:db8::53"], dns_search=["."]))
    assert (_cdir(s, c["id"]) / "resolv.conf").read_text() == (
        "nameserver 192.0.2.53\nnameserver 2001:db8::53\n"
    )


def test_dns_off_with_servers_writes_only_them(sup: Supervisor) -> None:
    c = sup.create(spec(dns=False, dns_servers=["192.0.2.53"]))
    assert (_cdir(sup, c["id"]) / "resolv.conf").read_text() == "nameserver 192.0.2.53\n"
    d = sup.create(spec(dns=False))
    assert not (_cdir(sup, d["id"]) / "resolv.conf").exists()


def test_resolv_conf_with_merges_and_replaces() -> None:
    base = "# generated\nnameserver 10.0.0.1\nsearch a.test\noptions ndots:1 edns0\n"
    assert resolv_conf_with(base, ["10.0.0.2"], [], ["ndots:3"], True) == (
        "nameserver 10.0.0.1\nnameserver 10.0.0.2\nsearch a.test\noptions ndots:1 edns0 ndots:3\n"
    )
    assert resolv_conf_with(base, ["10.0.0.2"], ["b.test"], [], False) == (
        "nameserver 10.0.0.2\nsearch b.test\noptions ndots:1 edns0\n"
    )
    assert resolv_conf_with(base, [], ["."], [], False) == (
        "nameserver 10.0.0.1\noptions ndots:1 edns0\n"
    )


def test_extra_hosts_and_dns_values_are_checked() -> None:
    for bad, field in (
        ({"extra_hosts": ["justaname"]}, "extra_hosts 'justaname': must be NAME:ADDRESS"),
        ({"extra_hosts": ["db:notanip"]}, "'notanip' is not an IP address or host-gateway"),
        ({"dns_servers": ["dns.google"]}, "dns_servers 'dns.google' is not an IP address"),
        ({"dns_search": ["bad_domain"]}, "dns_search 'bad_domain' is not a domain name"),
        ({"dns_options": ["ndots 2"]}, "dns_options 'ndots 2' is not a resolv.conf option"),
        ({"domainname": "-x"}, "domainname '-x' is not a valid domain name"),
    ):
        with pytest.raises(ValidationError, match=field):
            spec(**bad)


# ------------------------------------------------------------------ sysctls and expose


def test_net_sysctls_are_set_in_the_containers_netns_after_the_network(
    sup: Supervisor, calls: Calls
) -> None:
    _recording_host(sup, calls)
    c = sup.create(spec(sysctls={"net.ipv4.ip_unprivileged_port_start": "80"}))
    names = calls.names()
    assert names.index("setup") < names.index("sysctls") < names.index("start")
    (call,) = [x for x in calls if x[0] == "sysctls"]
    assert call[1:] == (
        sup.run_dir / "netns" / c["id"],
        {"net.ipv4.ip_unprivileged_port_start": "80"},
    )


def test_sysctl_failure_undoes_the_start(sup: Supervisor, calls: Calls) -> None:
    def refuse(path: Path, values: Any) -> None:
        raise ConfigError("sysctls 'net.x': no such sysctl in a container's network namespace")

    sup.host.set_sysctls = refuse
    with pytest.raises(ConfigError, match="net.x"):
        sup.create(spec(sysctls={"net.x": "1"}))
    assert calls.names()[-2:] == ["teardown", "netns_delete"]
    assert sup.list_containers(all=True) == []


def test_only_net_sysctls_are_accepted() -> None:
    with pytest.raises(ValidationError, match="sysctls 'kernel.shmmax': only net"):
        spec(sysctls={"kernel.shmmax": "1"})
    with pytest.raises(ValidationError, match=r"sysctls 'net.ipv4/../x'"):
        spec(sysctls={"net.ipv4/../x": "1"})


def test_expose_is_metadata_shown_by_the_api(sup: Supervisor, calls: Calls) -> None:
    c = sup.create(spec(expose=["80", "53/udp", "8000-8002"]))
    assert c["expose"] == ["80/tcp", "53/udp", "8000-8002/tcp"]
    assert c["network_mode"] == "bridge"
    assert all(o[3] == [] for o in calls if o[0] == "setup")  # nothing published
    with pytest.raises(ValidationError, match="expose '70000'"):
        spec(expose=["70000"])


# ------------------------------------------------------------------ network_mode


def test_network_mode_none_has_a_netns_with_lo_only(sup: Supervisor, calls: Calls) -> None:
    _recording_host(sup, calls)
    c = sup.create(spec(network_mode="none", sysctls={"net.ipv4.tcp_syncookies": "0"}))
    netns = sup.run_dir / "netns" / c["id"]
    assert calls.names() == ["netns_create", "lo_up", "sysctls", "mount", "bundle", "start"]
    assert c["ips"] == [] and c["networks"] == [] and c["network_mode"] == "none"
    bundle = sup.host.runtime.last  # type: ignore[attr-defined]
    assert bundle["netns_path"] == str(netns) and bundle["host_network"] is False
    calls.clear()
    sup.stop(c["id"], timeout=1)
    assert calls.names()[-1] == "netns_delete" and "teardown" not in calls.names()


def test_network_mode_host_gets_no_network_namespace(sup: Supervisor, calls: Calls) -> None:
    c = sup.create(spec(network_mode="host", extra_hosts=["gw:host-gateway"]))
    assert calls.names() == ["mount", "bundle", "start"]
    bundle = sup.host.runtime.last  # type: ignore[attr-defined]
    assert bundle["host_network"] is True and bundle["netns_path"] is None
    assert c["hostname"] == os.uname().nodename
    hosts = (_cdir(sup, c["id"]) / "hosts").read_text()
    assert hosts.endswith("10.231.0.1\tgw\n")
    assert Path("/etc/hosts").read_text().splitlines()[0] in hosts.splitlines()
    calls.clear()
    sup.stop(c["id"], timeout=1)
    assert calls.names() == ["kill", "runc_delete", "unmount"]


def test_network_mode_refuses_what_needs_a_network_of_its_own() -> None:
    for mode, kw, field in (
        ("host", {"ports": ["80:80"]}, "ports"),
        ("host", {"sysctls": {"net.ipv4.ip_forward": "1"}}, "sysctls"),
        ("none", {"aliases": ["x"]}, "aliases"),
        ("none", {"ipv4_address": "10.231.0.9"}, "ipv4_address"),
        ("container:db", {"hostname": "x"}, "hostname"),
        ("container:db", {"dns_servers": ["192.0.2.1"]}, "dns_servers"),
        ("container:db", {"extra_hosts": ["a:1.2.3.4"]}, "extra_hosts"),
        ("container:db", {"expose": ["80"]}, "expose"),
        ("container:db", {"networks": [{"name": "nyx"}]}, "networks"),
        ("host", {"network": "back"}, "network"),
    ):
        with pytest.raises(ValidationError, match=f"{field} .*not with network_mode '{mode}'"):
            spec(network_mode=mode, **kw)
    with pytest.raises(ValidationError, match="network_mode 'service:db': must be"):
        spec(network_mode="service:db")
    assert spec(network_mode="bridge").network_mode is None


def test_container_mode_joins_the_other_netns_and_shares_its_files(
    sup: Supervisor, calls: Calls
) -> None:
    db = sup.create(spec(name="db", hostname="db", extra_hosts=["x:10.9.9.9"]))
    calls.clear()
    app = sup.create(spec(name="app", network_mode="container:db"))
    assert calls.names() == ["mount", "bundle", "start"]  # no netns, network or DNS of its own
    bundle = sup.host.runtime.last  # type: ignore[attr-defined]
    assert bundle["netns_path"] == str(sup.run_dir / "netns" / db["id"])
    assert bundle["host_network"] is False
    other = _cdir(sup, db["id"])
    assert bundle["mounts"] == [
        (str(other / "hosts"), "/etc/hosts", False),
        (str(other / "hostname"), "/etc/hostname", False),
        (str(other / "resolv.conf"), "/etc/resolv.conf", False),
    ]
    assert app["hostname"] == "db" and app["network_mode"] == "container:db"
    # a third one naming the joiner joins the owner
    sup.create(spec(name="side", network_mode=f"container:{app['id'][:12]}"))
    assert sup.host.runtime.last["netns_path"] == bundle["netns_path"]  # type: ignore[attr-defined]


def test_container_mode_needs_the_other_running(sup: Supervisor) -> None:
    with pytest.raises(NotFoundError, match="network_mode 'container:nope': no such container"):
        sup.create(spec(network_mode="container:nope"))
    sup.create(spec(name="db"), start=False)
    with pytest.raises(ConflictError, match="container 'db' is created; start it first"):
        sup.create(spec(name="app", network_mode="container:db"))
    assert [c["name"] for c in sup.list_containers(all=True)] == ["db"]
    host = sup.create(spec(name="h", network_mode="host"))
    with pytest.raises(ConfigError, match="'h' uses the host's network"):
        sup.create(spec(name="app2", network_mode=f"container:{host['name']}"))


def test_the_network_owner_cannot_be_removed_while_joined(sup: Supervisor, calls: Calls) -> None:
    sup.create(spec(name="db"))
    sup.create(spec(name="app", network_mode="container:db"))
    calls.clear()
    with pytest.raises(ConflictError, match=r"'db' is the network of 'app'.*remove them first"):
        sup.remove("db", force=True)
    assert calls == [] and sup.get("db")["state"] == "running"
    sup.remove("app", force=True)
    sup.remove("db", force=True)
    assert sup.list_containers(all=True) == []


def test_joiners_stop_with_their_network_owner(sup: Supervisor, parts: dict[str, Any]) -> None:
    db = sup.create(spec(name="db"))
    sup.create(spec(name="app", network_mode="container:db"))
    parts["runtime"].exit(db["id"], 0)
    assert sup.wait("db", timeout=5)["state"] == "exited"
    assert sup.wait("app", timeout=5)["state"] == "stopped"


def test_host_and_container_modes_are_readopted_after_a_restart(
    tmp_path: Path, parts: dict[str, Any], calls: Calls
) -> None:
    first = make_sup(tmp_path, parts, calls)
    first.create(spec(name="db"))
    first.create(spec(name="app", network_mode="container:db"))
    first.create(spec(name="h", network_mode="host"))
    second = make_sup(tmp_path, parts, calls)
    assert second.reconcile() == {"stopped": 0, "cleaned": 0, "adopted": 3}
    assert {c["name"] for c in second.list_containers()} == {"db", "app", "h"}


# ------------------------------------------------------------------ with restart policies


def test_joiners_stop_when_their_owner_restarts_by_its_policy(
    sup: Supervisor, parts: dict[str, Any]
) -> None:
    """The owner's restart undoes its netns: the joiner loses its network and is stopped
    (not by hand, and not restarted by its own policy into a namespace that is gone)."""
    from test_restart_policy import controlled

    _, later = controlled(sup)
    db = sup.create(spec(name="db", restart="always"))
    sup.create(spec(name="app", network_mode="container:db", restart="always"))
    parts["runtime"].exit(db["id"], 1)
    assert sup.wait("app", timeout=5)["state"] == "stopped"
    assert sup.get("db")["state"] == "restarting" and len(later) == 1  # only db's restart
    later[-1].fire()
    assert sup.get("db")["state"] == "running" and sup.get("app")["state"] == "stopped"
    assert not next(r for r in sup.store.load_all()[0] if r.name == "app").stopped_by_hand


def test_a_joiner_restarts_into_its_owners_netns_and_holds_it_meanwhile(
    sup: Supervisor, parts: dict[str, Any]
) -> None:
    from test_restart_policy import controlled

    _, later = controlled(sup)
    db = sup.create(spec(name="db"))
    app = sup.create(spec(name="app", network_mode="container:db", restart="on-failure"))
    parts["runtime"].exit(app["id"], 1)
    sup.wait("app", timeout=5)
    assert sup.get("app")["state"] == "restarting"
    with pytest.raises(ConflictError, match=r"'db' is the network of 'app'"):
        sup.remove("db", force=True)
    assert sup.get("db")["state"] == "running"
    later[-1].fire()
    assert sup.get("app")["state"] == "running"
    assert sup.host.runtime.last["netns_path"] == str(sup.run_dir / "netns" / db["id"])  # type: ignore[attr-defined]


def test_a_joiner_waiting_to_restart_stays_stopped_when_its_owner_stops(
    sup: Supervisor, parts: dict[str, Any]
) -> None:
    from test_restart_policy import controlled

    _, later = controlled(sup)
    sup.create(spec(name="db"))
    app = sup.create(spec(name="app", network_mode="container:db", restart="always"))
    parts["runtime"].exit(app["id"], 1)
    sup.wait("app", timeout=5)
    sup.stop("db", timeout=1)
    assert sup.wait("app", timeout=5)["state"] == "stopped"
    assert later[-1].cancelled
