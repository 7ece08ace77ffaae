"""Every networking key of a compose service and network (issue 14): what the loader makes
of them, what nyxd is asked for, and ``up``/``down`` with external networks, drivers and
``network_mode: service:`` (the fake nyxd of test_compose_cmd)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import test_compose_cmd as tc
import yaml
from test_compose_cmd import FakeNyxd, run

from nyx_cli.compose._file import load_yaml
from nyx_cli.compose._plan import plan_stack
from nyx_cli.compose._project import ComposeProject, load_compose
from nyx_cli.daemon._models import ContainerSpec
from nyx_core import ConfigError

fake, project_dir = tc.fake, tc.project_dir


def load(doc: str) -> ComposeProject:
    return load_compose(yaml.safe_load(doc), default_project="proj")


def err(doc: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(doc)
    return str(info.value)


def spec_of(doc: str, service: str) -> ContainerSpec:
    return plan_stack(load(doc)).container_spec(service)


# ------------------------------------------------------------------ the loader and the plan


def test_files_and_names_keys_become_the_containers_spec() -> None:
    doc = """
services:
  web:
    image: x
    container_name: shop-web
    domainname: example.test
    dns: 192.0.2.53
    dns_search: [corp.test]
    dns_opt: [ndots:2]
    extra_hosts: ["db.local:10.1.2.3", "v6=::1"]
    expose: [80, "53/udp"]
    sysctls: {net.ipv4.ip_unprivileged_port_start: 80}
  api:
    image: x
    extra_hosts: {gw: host-gateway, multi: [10.0.0.1, 10.0.0.2]}
    sysctls: [net.core.somaxconn=1024]
"""
    web, api = spec_of(doc, "web"), spec_of(doc, "api")
    assert web.name == "shop-web" and web.domainname == "example.test"
    assert (web.dns_servers, web.dns_search, web.dns_options) == (
        ["192.0.2.53"],
        ["corp.test"],
        ["ndots:2"],
    )
    assert web.extra_hosts == ["db.local:10.1.2.3", "v6:::1"]
    assert web.expose == ["80/tcp", "53/udp"]
    assert web.sysctls == {"net.ipv4.ip_unprivileged_port_start": "80"}
    assert api.extra_hosts == ["gw:host-gateway", "multi:10.0.0.1", "multi:10.0.0.2"]
    assert api.sysctls == {"net.core.somaxconn": "1024"}
    assert plan_stack(load(doc)).container_name("web") == "shop-web"


@pytest.mark.parametrize(
    ("service", "message"),
    [
        ("{image: x, sysctls: {kernel.shmmax: 1}}", "services.a.sysctls: sysctls 'kernel.shmmax'"),
        ("{image: x, extra_hosts: [nocolon]}", "services.a.extra_hosts: extra_hosts 'nocolon'"),
        ("{image: x, dns: [dns.google]}", "services.a.dns: dns_servers 'dns.google' is not"),
        ("{image: x, expose: [0]}", "services.a.expose: expose '0'"),
        ("{image: x, domainname: -x}", "services.a.domainname: domainname '-x'"),
        ("{image: x, mac_address: 'zz'}", "services.a.mac_address: mac_address 'zz'"),
        ("{image: x, container_name: 'a b'}", "services.a.container_name: must be letters"),
        ("{image: x, network_mode: bogus}", "services.a.network_mode: must be host, none"),
        ("{image: x, links: [nope]}", "services.a.links[0]: no such (other) service"),
    ],
)
def test_bad_values_name_the_key_path(service: str, message: str) -> None:
    assert message in err(f"services: {{a: {service}}}")


def test_static_addresses_are_asked_for_and_checked() -> None:
    doc = """
services:
  a:
    image: x
    mac_address: 02:42:0a:59:07:0a
    networks:
      back: {ipv4_address: 10.89.7.10}
      front:
  b:
    image: x
    networks:
      back: {ipv4_address: 10.89.7.11, mac_address: "02:42:0A:59:07:0B"}
networks:
  back: {ipam: {config: [{subnet: 10.89.7.0/24}]}}
  front:
"""
    a, b = spec_of(doc, "a"), spec_of(doc, "b")
    assert [(n.name, n.ipv4_address, n.mac_address) for n in a.networks] == [
        ("proj_back", "10.89.7.10", "02:42:0a:59:07:0a"),
        ("proj_front", None, None),
    ]
    assert [(n.ipv4_address, n.mac_address) for n in b.networks] == [
        ("10.89.7.11", "02:42:0a:59:07:0b")
    ]
    assert "services.b.networks.back.ipv4_address: is also the address of a" in err(
        doc.replace("10.89.7.11", "10.89.7.10")
    )
    assert "services.a.networks.back.ipv4_address: is outside network back's subnet" in err(
        doc.replace("10.89.7.10", "10.89.8.10")
    )
    assert "ipv4_address 'fd00::1' is not an IPv4 address" in err(
        doc.replace("10.89.7.10", "'fd00::1'")
    )


STACK6 = """
services:
  a:
    image: x
    networks:
      front: {ipv4_address: 10.89.60.10, ipv6_address: "FD00:C0:0::10"}
      back:
  b:
    image: x
    networks:
      front: {ipv6_address: "fd00:c0::11"}
  c:
    image: x
    networks:
      outside: {ipv6_address: "fd00:e::5"}
networks:
  front:
    enable_ipv6: true
    ipam: {config: [{subnet: 10.89.60.0/24}, {subnet: "fd00:c0::/64"}]}
  back:
  outside: {external: true}
"""


def test_static_ipv6_addresses_are_asked_for_and_checked() -> None:
    a, b, c = (spec_of(STACK6, s) for s in "abc")
    assert [(n.name, n.ipv4_address, n.ipv6_address) for n in a.networks] == [
        ("proj_front", "10.89.60.10", "fd00:c0::10"),
        ("proj_back", None, None),
    ]
    assert [n.ipv6_address for n in b.networks] == ["fd00:c0::11"]
    assert [(n.name, n.ipv6_address) for n in c.networks] == [("outside", "fd00:e::5")]
    assert "services.b.networks.front.ipv6_address: is also the address of a" in err(
        STACK6.replace("fd00:c0::11", "fd00:c0::10")
    )
    assert (
        "services.b.networks.front.ipv6_address: is outside network front's subnet fd00:c0::/64"
        in err(STACK6.replace("fd00:c0::11", "fd00:c1::11"))
    )
    assert "ipv6_address '10.89.60.11' is an IPv4 address, not IPv6" in err(
        STACK6.replace('"fd00:c0::11"', "10.89.60.11")
    )
    assert "ipv6_address 'fd00::zz' is not an IPv6 address" in err(
        STACK6.replace("fd00:c0::11", "fd00::zz")
    )
    no_ipv6 = STACK6.replace("    enable_ipv6: true\n", "").replace(
        ', {subnet: "fd00:c0::/64"}', ""
    )
    assert "services.a.networks.front.ipv6_address: network front has no IPv6" in err(no_ipv6)
    on_default = "services: {a: {image: x, networks: {default: {ipv6_address: 'fd00::5'}}}}"
    assert "network default has no IPv6: declare it with enable_ipv6: true" in err(on_default)


def test_network_mode_service_joins_that_services_container() -> None:
    doc = """
services:
  db: {image: x, ports: ["5432:5432"]}
  sidecar:
    image: x
    network_mode: service:db
  probe:
    image: x
    network_mode: service:sidecar
"""
    plan = plan_stack(load(doc))
    assert plan.order == ("db", "sidecar", "probe")  # network_mode implies depends_on
    side = plan.container_spec("sidecar")
    assert side.network_mode == "container:proj-db-1"
    assert side.networks == [] and side.hostname is None and side.ports == []
    assert set(plan.stack_services()) == {"db"}
    assert plan.joiners("db") == ["probe", "sidecar"]


@pytest.mark.parametrize(
    ("service", "message"),
    [
        ("{image: x, network_mode: 'service:a'}", "services.a.network_mode: no such (other)"),
        ("{image: x, network_mode: 'service:zz'}", "services.a.network_mode: no such (other)"),
        ("{image: x, network_mode: host, ports: ['80:80']}", "services.a.ports: not with"),
        ("{image: x, network_mode: none, networks: [n]}", "services.a.networks: not with"),
        ("{image: x, network_mode: 'container:c', hostname: h}", "services.a.hostname: not with"),
        ("{image: x, network_mode: 'container:c', dns: [192.0.2.1]}", "services.a.dns: not with"),
        ("{image: x, network_mode: host, sysctls: {net.a: 1}}", "services.a.sysctls: not with"),
        ("{image: x, network_mode: host, mac_address: '02:00:00:00:00:01'}", "mac_address: not"),
    ],
)
def test_network_mode_refuses_what_needs_a_network_of_its_own(service: str, message: str) -> None:
    assert message in err(f"services: {{a: {service}}}\nnetworks: {{n: {{}}}}")


def test_host_none_and_bridge_modes() -> None:
    doc = """
services:
  h: {image: x, network_mode: host, extra_hosts: [gw:host-gateway]}
  n: {image: x, network_mode: none, sysctls: {net.ipv4.tcp_syncookies: 0}}
  b: {image: x, network_mode: bridge, expose: [80]}
"""
    plan = plan_stack(load(doc))
    h, n, b = (plan.container_spec(s) for s in ("h", "n", "b"))
    assert (h.network_mode, n.network_mode, b.network_mode) == ("host", "none", None)
    assert h.attachments() == [] and n.attachments() == []
    assert [a.name for a in b.attachments()] == ["nyx"]  # nyxd's default network
    assert b.networks == [] and b.aliases == ["b"]
    assert set(plan.stack_services()) == {"b"}


def test_links_are_aliases_on_the_shared_networks() -> None:
    doc = """
services:
  web: {image: x, networks: [front, back], links: ["db:database", cache]}
  db: {image: x, networks: [back]}
  cache: {image: x, networks: [front]}
networks: {front: {}, back: {}}
"""
    plan = plan_stack(load(doc))
    assert plan.order.index("db") < plan.order.index("web")  # links imply depends_on
    assert [(a.name, a.aliases) for a in plan.attachments("db")] == [
        ("proj_back", ["db", "database"])
    ]
    assert [a.aliases for a in plan.attachments("cache")] == [["cache"]]
    apart = doc.replace("db: {image: x, networks: [back]}", "db: {image: x, networks: [other]}")
    apart = apart.replace("{front: {}, back: {}}", "{front: {}, back: {}, other: {}}")
    assert "services.web.links[0]: db shares no network with web" in err(apart)


def test_container_names_are_unique() -> None:
    message = err("services: {a: {image: x, container_name: c}, b: {image: x, container_name: c}}")
    assert "services.b.container_name: also the container of a" in message


def test_external_network_and_driver_are_read() -> None:
    doc = """
services: {a: {image: x, networks: [shared, own, legacy]}}
networks:
  shared: {external: true}
  own: {driver: bridge, name: own-net}
  legacy: {external: {name: old-net}}
"""
    nets = load(doc).networks
    assert (nets["shared"].name, nets["shared"].external) == ("shared", True)
    assert (nets["own"].name, nets["own"].external, nets["own"].driver) == (
        "own-net",
        False,
        "bridge",
    )
    assert (nets["legacy"].name, nets["legacy"].external) == ("old-net", True)
    assert "networks.shared.ipam: an external network is used as it is" in err(
        doc.replace("{external: true}", "{external: true, ipam: {}}")
    )


# ------------------------------------------------------------------ up / down / config


NET_STACK = """\
services:
  db:
    image: busybox
    networks:
      shared: {ipv4_address: 10.89.9.20}
  sidecar:
    image: busybox
    network_mode: service:db
networks:
  shared: {external: true, name: outside}
"""


def _write(project_dir: Path, text: str) -> None:
    (project_dir / "compose.yaml").write_text(text)


def test_up_uses_an_external_network_and_down_keeps_it(
    fake: tuple[FakeNyxd, str], project_dir: Path
) -> None:
    daemon, sock = fake
    daemon.networks["outside"] = {"name": "outside", "subnet": "10.89.9.0/24"}
    _write(project_dir, NET_STACK)
    result = run(sock, "up", "-d")
    assert result.exit_code == 0, result.output
    assert "Network outside  External" in result.output
    assert daemon.calls("POST", "/v1/networks") == []
    db, side = (ContainerSpec.model_validate(c["spec"]) for c in daemon.containers)
    assert [(a.name, a.ipv4_address) for a in db.networks] == [("outside", "10.89.9.20")]
    assert side.network_mode == "container:mystack-db-1"
    down = run(sock, "down")
    assert down.exit_code == 0, down.output
    assert daemon.containers == [] and "outside" in daemon.networks
    assert daemon.calls("DELETE", "/v1/networks") == []
    # the joining service went first: nyxd refuses to remove db while sidecar is in it
    deletes = [r[1] for r in daemon.calls("DELETE", "/v1/containers")]
    assert deletes[0].startswith("/v1/containers/c0002")


def test_a_missing_external_network_is_an_error_naming_it(
    fake: tuple[FakeNyxd, str], project_dir: Path
) -> None:
    daemon, sock = fake
    _write(project_dir, NET_STACK)
    result = run(sock, "up", "-d")
    assert result.exit_code == 1
    assert "networks.shared: external network 'outside' does not exist" in result.output
    assert daemon.containers == [] and daemon.networks == {}


def test_up_refuses_a_driver_that_is_not_nyxds(
    fake: tuple[FakeNyxd, str], project_dir: Path
) -> None:
    daemon, sock = fake
    _write(project_dir, "services: {a: {image: busybox, networks: [n]}}\nnetworks: {n: {}}\n")
    assert run(sock, "up", "-d").exit_code == 0
    run(sock, "down")
    _write(
        project_dir,
        "services: {a: {image: busybox, networks: [n]}}\nnetworks: {n: {driver: native}}\n",
    )
    assert run(sock, "up", "-d").exit_code == 0
    run(sock, "down")
    _write(
        project_dir,
        "services: {a: {image: busybox, networks: [n]}}\nnetworks: {n: {driver: overlay}}\n",
    )
    daemon.requests.clear()
    result = run(sock, "up", "-d")
    assert result.exit_code == 1
    assert "networks.n.driver: 'overlay' is not nyxd's net driver 'native'" in result.output
    assert daemon.calls("POST") == []


def test_up_refuses_static_addresses_on_a_driver_without_them(
    fake: tuple[FakeNyxd, str], project_dir: Path
) -> None:
    daemon, sock = fake
    daemon.driver = "cni"
    daemon.networks["outside"] = {"name": "outside"}
    _write(project_dir, NET_STACK)
    result = run(sock, "up", "-d")
    assert result.exit_code == 1
    assert "services.db.networks.shared.ipv4_address: nyxd's net driver 'cni' does not" in (
        result.output
    )
    assert daemon.calls("POST") == []


def test_up_refuses_a_static_ipv6_address_on_a_driver_without_them(
    fake: tuple[FakeNyxd, str], project_dir: Path
) -> None:
    daemon, sock = fake
    daemon.driver = "cni"
    daemon.networks["outside"] = {"name": "outside"}
    _write(project_dir, NET_STACK.replace("ipv4_address: 10.89.9.20", "ipv6_address: 'fd00::9'"))
    result = run(sock, "up", "-d")
    assert result.exit_code == 1
    assert "services.db.networks.shared.ipv6_address: nyxd's net driver 'cni' does not" in (
        result.output
    )
    assert daemon.calls("POST") == []


def test_recreating_a_service_recreates_the_services_in_its_netns(
    fake: tuple[FakeNyxd, str], project_dir: Path
) -> None:
    daemon, sock = fake
    daemon.networks["outside"] = {"name": "outside"}
    _write(project_dir, NET_STACK)
    assert run(sock, "up", "-d").exit_code == 0
    _write(
        project_dir,
        NET_STACK.replace(
            "image: busybox\n    networks", "image: busybox\n    expose: [5432]\n    networks"
        ),
    )
    result = run(sock, "up", "-d")
    assert result.exit_code == 0, result.output
    assert [c["name"] for c in daemon.containers] == ["mystack-db-1", "mystack-sidecar-1"]
    assert [c["id"] for c in daemon.containers] == ["c0003", "c0004"]


def test_config_shows_the_networking_keys_and_reads_back(project_dir: Path, tmp_path: Path) -> None:
    text = """\
services:
  web:
    image: x
    container_name: web1
    domainname: ex.test
    dns: [192.0.2.53]
    dns_search: [corp.test]
    dns_opt: [ndots:2]
    extra_hosts: [gw:host-gateway]
    expose: [80]
    sysctls: {net.ipv4.ip_unprivileged_port_start: 80}
    mac_address: 02:42:0a:59:07:0a
    links: [db:database]
    networks:
      back: {aliases: [w], ipv4_address: 10.89.7.10, ipv6_address: "fd00:7::10"}
  db: {image: x, networks: [back]}
  side: {image: x, network_mode: service:web}
networks:
  back:
    driver: bridge
    enable_ipv6: true
    ipam: {config: [{subnet: "fd00:7::/64", gateway: "fd00:7::fe"}]}
  ext: {external: true}
"""
    _write(project_dir, text)
    sock = str(tmp_path / "no.sock")
    first = run(sock, "config")
    assert first.exit_code == 0, first.output
    data: dict[str, Any] = load_yaml(first.stdout, "config")
    web = data["services"]["web"]
    assert web["networks"] == {
        "back": {"aliases": ["w"], "ipv4_address": "10.89.7.10", "ipv6_address": "fd00:7::10"}
    }
    assert web["links"] == ["db:database"] and web["expose"] == ["80/tcp"]
    assert web["extra_hosts"] == ["gw:host-gateway"] and web["container_name"] == "web1"
    assert data["services"]["side"]["network_mode"] == "service:web"
    assert "networks" not in data["services"]["side"]
    assert data["networks"]["back"]["driver"] == "bridge"
    assert data["networks"]["back"]["enable_ipv6"] is True
    assert data["networks"]["back"]["ipam"] == {
        "config": [{"subnet": "fd00:7::/64", "gateway": "fd00:7::fe"}]
    }
    _write(project_dir, first.stdout)
    second = run(sock, "config")
    assert second.exit_code == 0, second.output
    assert second.stdout == first.stdout
