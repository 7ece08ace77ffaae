from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
import yaml

from nyx_cli.compose._plan import plan_stack
from nyx_cli.compose._project import (
    CONFIG_HASH_LABEL,
    PROJECT_LABEL,
    SERVICE_LABEL,
    ComposeProject,
    check_project_name,
    interpolate,
    load_compose,
    normalize_project_name,
)
from nyx_cli.daemon._models import ContainerSpec, Healthcheck
from nyx_core import ConfigError, DnsMode, NetworkBackend, PortMapping, dns_policy

EXAMPLE = Path(__file__).parents[3] / "examples" / "compose" / "compose.yaml"


def load(doc: str | dict[str, Any], **kw: Any) -> ComposeProject:
    data = yaml.safe_load(doc) if isinstance(doc, str) else doc
    kw.setdefault("default_project", "proj")
    return load_compose(data, **kw)


def err(doc: str | dict[str, Any], **kw: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load(doc, **kw)
    return str(info.value)


TWO_TIER = """
services:
  web:
    image: busybox
    command: httpd -f -p 80
    ports: ["8080:80"]
    networks: [front, back]
    depends_on: [backend]
  backend:
    image: busybox
    networks:
      back:
        aliases: [api, db]
networks:
  front:
  back:
    internal: true
"""


# ---------------------------------------------------------------- services


def test_two_tier_parses_and_orders() -> None:
    project = load(TWO_TIER)
    assert project.name == "proj"
    assert project.warnings == ()
    web = project.services["web"]
    assert web.command == ("httpd", "-f", "-p", "80")
    assert web.ports == (PortMapping(host_port=8080, container_port=80),)
    assert [n.key for n in web.networks] == ["front", "back"]
    assert project.services["backend"].networks[0].aliases == ("api", "db")
    assert project.networks["back"].internal is True
    assert project.networks["front"].name == "proj_front"
    assert "default" not in project.networks
    assert plan_stack(project).order == ("backend", "web")


def test_default_network_when_service_lists_none() -> None:
    project = load("services: {a: {image: x}, b: {image: y, networks: [n]}}\nnetworks: {n: {}}")
    assert project.networks["default"].name == "proj_default"
    assert project.networks["default"].internal is False
    plan = plan_stack(project)
    assert [n.name for n in plan.networks()] == ["proj_n", "proj_default"]
    assert plan.attachments("a")[0].name == "proj_default"


def test_default_network_can_be_declared_internal() -> None:
    project = load("services: {a: {image: x}}\nnetworks: {default: {internal: true}}")
    assert project.networks["default"].internal is True
    assert plan_stack(project).attachments("a")[0].internal is True


def test_network_name_overrides_prefix() -> None:
    project = load("services: {a: {image: x, networks: [n]}}\nnetworks: {n: {name: shared-net}}")
    assert plan_stack(project).attachments("a")[0].name == "shared-net"


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("echo 'hello world' x", ("echo", "hello world", "x")),
        (["sh", "-c", "echo a b"], ("sh", "-c", "echo a b")),
        ([1, "x"], ("1", "x")),
        (None, None),
        ([], ()),
    ],
)
def test_command_string_is_shell_split_list_kept(command: Any, expected: Any) -> None:
    project = load({"services": {"a": {"image": "x", "command": command, "entrypoint": command}}})
    assert project.services["a"].command == expected
    assert project.services["a"].entrypoint == expected


def test_environment_list_and_map() -> None:
    environ = {"FROM_SHELL": "s"}
    as_list = load(
        {
            "services": {
                "a": {"image": "x", "environment": ["A=1", "B=", "C=x=y", "FROM_SHELL", "NOPE"]}
            }
        },
        environ=environ,
    )
    assert dict(as_list.services["a"].environment) == {
        "A": "1",
        "B": "",
        "C": "x=y",
        "FROM_SHELL": "s",
    }
    as_map = load(
        "services: {a: {image: x, environment: {A: 1, B: true, C: 1.5, FROM_SHELL: , NOPE: }}}",
        environ=environ,
    )
    assert dict(as_map.services["a"].environment) == {
        "A": "1",
        "B": "true",
        "C": "1.5",
        "FROM_SHELL": "s",
    }


def test_ports_short_and_long_syntax() -> None:
    project = load(
        """
services:
  a:
    image: x
    ports:
      - "127.0.0.1:8080:80"
      - "53:53/udp"
      - target: 443
        published: 8443
      - target: 53
        published: "5353"
        protocol: udp
        host_ip: 127.0.0.1
      - {target: 81, published: 9081, host_ip: "::1"}
      - {target: "7000-7001", published: "9000-9001"}
"""
    )
    ports = project.services["a"].ports
    assert [str(p) for p in ports] == [
        "127.0.0.1:8080:80/tcp",
        "53:53/udp",
        "8443:443/tcp",
        "127.0.0.1:5353:53/udp",
        "[::1]:9081:81/tcp",
        "9000-9001:7000-7001/tcp",
    ]
    assert ports[3].host_ip == ipaddress.ip_address("127.0.0.1")


def test_depends_on_map_and_restart() -> None:
    project = load(
        """
services:
  a: {image: x, restart: on-failure, depends_on: {b: {condition: service_started}, c: }}
  b: {image: x, restart: no}
  c: {image: x, restart: "on-failure:3"}
"""
    )
    assert project.services["a"].depends_on == ("b", "c")
    assert project.services["a"].restart == "on-failure"
    assert project.services["b"].restart == "no"
    assert project.services["c"].restart_max_retries == 3
    assert plan_stack(project).order == ("b", "c", "a")


def test_hostname_defaults_to_service_name() -> None:
    project = load("services: {web: {image: x}, b: {image: x, hostname: other}}")
    assert project.services["web"].hostname == "web"
    assert project.services["b"].hostname == "other"


# ---------------------------------------------------------------- warnings


def test_only_informational_keys_are_warnings_with_their_path() -> None:
    project = load(
        """
version: "3.8"
x-common: &c {image: x}
services:
  a:
    image: x
    x-note: fine
    labels: {team: web}
    logging: {driver: json-file}
    ports: [{target: 80, published: 8080, mode: host}]
    depends_on: {c: {condition: service_healthy}}
  c: {image: x}
networks:
  n:
    attachable: true
  unused: {}
"""
    )
    assert set(project.warnings) == {
        "version: obsolete, ignored",
        "services.a.logging: nyxd keeps every container's output itself, ignored",
        "services.a.ports[0].mode: not supported, ignored",
        "networks.n.attachable: swarm only: any container may join a nyx network, ignored",
        "networks.n: not used by any service, not created",
        "networks.unused: not used by any service, not created",
    }


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("include: [b.yaml]\nservices: {a: {image: x}}", "include: only one compose file is read"),
        ("bogus: 1\nservices: {a: {image: x}}", "bogus: unknown key"),
        (
            "services: {a: {image: x, build: .}}",
            "services.a.build: nyx does not build images: build it elsewhere (docker build",
        ),
        (
            "services: {a: {image: x, volumes_from: [b]}}",
            "services.a.volumes_from: volumes_from is not supported: mount the same named volumes",
        ),
        (
            "services: {a: {image: x, cpus: 2}}",
            "services.a.cpus: not supported by nyx (it would change what runs)",
        ),
        ("services: {a: {image: x, imagee: y}}", "services.a.imagee: unknown key"),
        (
            "services: {a: {image: x, networks: {n: {ipv6_address: 'fd00::5'}}}}\n"
            "networks: {n: {}}",
            "services.a.networks.n.ipv6_address: network n has no IPv6: declare it with "
            "enable_ipv6: true",
        ),
        (
            "services: {a: {image: x, networks: [n]}}\n"
            "networks: {n: {ipam: {config: [{subnet: 'fd00::/64'}]}}}",
            "networks.n.ipam.config: an IPv6 subnet needs enable_ipv6: true",
        ),
        (
            "services: {a: {image: x, networks: [n]}}\nnetworks: {n: {ipam: {options: {x: y}}}}",
            "networks.n.ipam.options: IPAM driver options are not supported",
        ),
        (
            "services: {a: {image: x, networks: [n]}}\n"
            "networks: {n: {ipam: {config: [{subnet: 10.89.50.0/24, ip_range: 10.89.50.0/25}]}}}",
            "networks.n.ipam.config[0].ip_range: nyx hands out the whole subnet",
        ),
    ],
)
def test_keys_that_change_what_runs_are_errors_naming_the_path(doc: str, message: str) -> None:
    assert message in err(doc)


def test_every_refused_key_of_a_mapping_is_named_at_once() -> None:
    message = err("services: {a: {image: x, build: ., volumes_from: [b], privileged: true}}")
    assert message.count("services.a.") == 3, message


def test_the_defaults_of_refused_keys_are_accepted() -> None:
    project = load(
        "services: {a: {image: x, networks: [n]}}\n"
        "networks: {n: {enable_ipv6: false, enable_ipv4: true}}"
    )
    assert project.warnings == ()
    assert "enable_ipv4" in err(
        "services: {a: {image: x, networks: [n]}}\nnetworks: {n: {enable_ipv4: false}}"
    )


def test_network_driver_opts_labels_and_ipam() -> None:
    project = load(
        """
services: {a: {image: x, networks: [n, m]}}
networks:
  n:
    driver_opts: {mtu: 1400, com.docker.network.bridge.name: br-n}
    labels: {team: web, tier: }
    ipam: {driver: default, config: [{subnet: 10.89.40.0/24, gateway: 10.89.40.1}]}
  m:
    labels: [a=b, c]
    ipam: {config: [{subnet: 10.89.41.0/24}]}
"""
    )
    n, m = project.networks["n"], project.networks["m"]
    assert n.options == {"mtu": "1400", "com.docker.network.bridge.name": "br-n"}
    assert n.labels == {"team": "web", "tier": ""}
    assert (n.subnet, n.gateway) == ("10.89.40.0/24", "10.89.40.1")
    assert m.labels == {"a": "b", "c": ""}
    assert (m.subnet, m.gateway, m.options) == ("10.89.41.0/24", None, {})
    assert not project.warnings


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("doc", "fragments"),
    [
        ("", ["compose file is empty"]),
        ("[1, 2]", ["(top level): must be a mapping"]),
        ("networks: {}", ["services: missing"]),
        ("services: {}", ["services: must define at least one service"]),
        ("services: {a: [x]}", ["services.a: must be a mapping", "['x']"]),
        ("services: {a: {command: x}}", ["services.a: needs 'image'"]),
        ("services: {a: {build: .}}", ["services.a.build: nyx does not build images", "nyx load"]),
        ("services: {a: {image: 3}}", ["services.a.image: must be a string", "3"]),
        ("services: {a: {image: ''}}", ["services.a.image: must not be empty"]),
        ("services: {'a b': {image: x}}", ["services.a b: service name", "'a b'"]),
        ("services: {a_b: {image: x}}", ["services.a_b: service name is not a valid hostname"]),
        ("services: {a: {image: x, hostname: -bad}}", ["services.a.hostname", "'-bad'"]),
        ("services: {a: {image: x, command: {a: 1}}}", ["services.a.command: must be a string"]),
        (
            'services: {a: {image: x, command: "echo \'oops"}}',
            ["services.a.command: cannot be split"],
        ),
        ("services: {a: {image: x, ports: ['80']}}", ["services.a.ports[0]:", "host port missing"]),
        (
            "services: {a: {image: x, ports: ['8080:80', '1:99999']}}",
            ["services.a.ports[1]:", "99999"],
        ),
        ("services: {a: {image: x, ports: [80]}}", ["services.a.ports[0]: a bare container port"]),
        ("services: {a: {image: x, ports: '80:80'}}", ["services.a.ports: must be a list"]),
        (
            "services: {a: {image: x, ports: [{target: 80}]}}",
            ["services.a.ports[0]: long syntax needs 'published'"],
        ),
        (
            "services: {a: {image: x, ports: [{published: 80}]}}",
            ["services.a.ports[0]: long syntax needs 'target'"],
        ),
        (
            "services: {a: {image: x, ports: [{target: 80, published: 80, protocol: sctp}]}}",
            ["services.a.ports[0].protocol: must be tcp or udp", "'sctp'"],
        ),
        (
            "services: {a: {image: x, ports: [{target: 80, published: 8000-8001}]}}",
            ["services.a.ports[0].published: a range needs a target range"],
        ),
        (
            "services: {a: {image: x, ports: [{target: 80, published: 80, host_ip: nope}]}}",
            ["services.a.ports[0]:", "'nope' is not an IP address"],
        ),
        ("services: {a: {image: x, environment: [1]}}", ["services.a.environment[0]"]),
        ("services: {a: {image: x, environment: ['=x']}}", ["services.a.environment[0]", "'=x'"]),
        ("services: {a: {image: x, environment: 'A=1'}}", ["services.a.environment: must be"]),
        (
            "services: {a: {image: x, environment: {A: [1]}}}",
            ["services.a.environment.A: must be a string or number"],
        ),
        (
            "services: {a: {image: x, networks: [nope]}}",
            ["services.a.networks[0]: network is not declared", "'nope'"],
        ),
        (
            "services: {a: {image: x, networks: {nope: }}}",
            ["services.a.networks.nope: network is not declared"],
        ),
        (
            "services: {a: {image: x, networks: [n, n]}}\nnetworks: {n: }",
            ["services.a.networks: lists the same network twice"],
        ),
        ("services: {a: {image: x, networks: []}}", ["services.a.networks: must name at least"]),
        (
            "services: {a: {image: x, networks: {n: {aliases: a}}}}\nnetworks: {n: }",
            ["services.a.networks.n.aliases: must be a list"],
        ),
        (
            "services: {a: {image: x, networks: {n: {aliases: [bad_alias]}}}}\nnetworks: {n: }",
            ["services.a.networks.n.aliases[0]: is not a valid DNS name", "'bad_alias'"],
        ),
        ("services: {a: {image: x, depends_on: [zz]}}", ["services.a.depends_on[0]: no such"]),
        ("services: {a: {image: x, depends_on: b}}", ["services.a.depends_on: must be a list"]),
        (
            "services: {a: {image: x, depends_on: {b: {condition: later}}}, b: {image: x}}",
            ["services.a.depends_on.b.condition: is not a Compose condition", "'later'"],
        ),
        (
            "services: {a: {image: x, restart: sometimes}}",
            ["services.a.restart: restart policy 'sometimes' is not one of no, on-failure[:N]"],
        ),
        (
            "services: {a: {image: x, restart: 'on-failure:0'}}",
            ["services.a.restart: restart policy 'on-failure:0': on-failure:N needs"],
        ),
        (
            "services: {a: {image: x, restart: 'always:2'}}",
            ["services.a.restart: restart policy 'always:2': a retry count goes only with"],
        ),
        (
            "services: {a: {image: x, healthcheck: {test: [curl, x]}}}",
            ["services.a.healthcheck.test: healthcheck test ['curl', 'x'] must start with CMD"],
        ),
        (
            "services: {a: {image: x, healthcheck: {test: ''}}}",
            ["services.a.healthcheck.test: must not be empty"],
        ),
        (
            "services: {a: {image: x, healthcheck: {test: [CMD-SHELL, a, b]}}}",
            ["services.a.healthcheck.test: healthcheck test", "CMD-SHELL takes one command"],
        ),
        (
            "services: {a: {image: x, healthcheck: {interval: 30}}}",
            ["services.a.healthcheck.interval: must be a duration like 30s", "(got 30)"],
        ),
        (
            "services: {a: {image: x, healthcheck: {timeout: 3x}}}",
            ["services.a.healthcheck.timeout: duration '3x': unknown unit 'x'"],
        ),
        (
            "services: {a: {image: x, healthcheck: {interval: 0s}}}",
            ["services.a.healthcheck.interval: Input should be greater than or equal to 0.001"],
        ),
        (
            "services: {a: {image: x, healthcheck: {retries: 0}}}",
            ["services.a.healthcheck.retries: Input should be greater than or equal to 1"],
        ),
        (
            "services: {a: {image: x, healthcheck: {retries: '3'}}}",
            ["services.a.healthcheck.retries: must be a whole number", "'3'"],
        ),
        (
            "services: {a: {image: x, healthcheck: {disable: true, test: 'true'}}}",
            ["services.a.healthcheck.disable: and test cannot both be set"],
        ),
        (
            "services: {a: {image: x, healthcheck: {disable: 'yes'}}}",
            ["services.a.healthcheck.disable: must be true or false", "'yes'"],
        ),
        (
            "services: {a: {image: x}}\nnetworks: {n: {internal: maybe}}",
            ["networks.n.internal: must be true or false", "'maybe'"],
        ),
        (
            "services: {a: {image: x}}\nnetworks: {n: {external: true, internal: true}}",
            ["networks.n.internal: an external network is used as it is"],
        ),
        (
            "services: {a: {image: x}}\nnetworks: {n: {driver: [overlay]}}",
            ["networks.n.driver: must be a string", "['overlay']"],
        ),
        ("services: {a: {image: x}}\nnetworks: {n: {name: 'a b'}}", ["networks.n.name"]),
        (
            "services: {a: {image: x}}\nnetworks: {n: {driver_opts: [mtu=1]}}",
            ["networks.n.driver_opts: must be a mapping"],
        ),
        (
            "services: {a: {image: x}}\nnetworks: {n: {driver_opts: {mtu: [1]}}}",
            ["networks.n.driver_opts.mtu: must be a string or number"],
        ),
        (
            "services: {a: {image: x}}\nnetworks: {n: {labels: ['=x']}}",
            ["networks.n.labels[0]: must be KEY=VALUE or KEY", "'=x'"],
        ),
        (
            "services: {a: {image: x}}\nnetworks: {n: {ipam: {driver: dhcp}}}",
            ["networks.n.ipam.driver: only the default IPAM driver", "'dhcp'"],
        ),
        (
            "services: {a: {image: x}}\n"
            "networks: {n: {ipam: {config: [{subnet: a}, {subnet: b}]}}}",
            ["networks.n.ipam.config: one IPv4 subnet per network"],
        ),
        (
            "services: {a: {image: x}}\nnetworks: {n: {ipam: {config: [{gateway: 10.1.0.1}]}}}",
            ["networks.n.ipam.config[0].gateway: needs the subnet", "'10.1.0.1'"],
        ),
        ("services: {a: {image: x}}\nnetworks: [n]", ["networks: must be a mapping"]),
        (
            "services: {a: {image: x, networks: [m, n]}}\nnetworks: {n: {name: s}, m: {name: s}}",
            ["networks.m.name:", "also the name of n"],
        ),
        ("name: Bad Name\nservices: {a: {image: x}}", ["project name 'Bad Name'"]),
        ("services: {" + "a" * 60 + ": {image: x}}", ["container name is longer than 63"]),
    ],
)
def test_invalid_files_name_path_and_value(doc: str, fragments: list[str]) -> None:
    message = err(doc)
    for fragment in fragments:
        assert fragment in message


def test_depends_on_cycle_is_an_error() -> None:
    project = load(
        "services: {a: {image: x, depends_on: [b]}, b: {image: x, depends_on: [c]}, "
        "c: {image: x, depends_on: [a]}}"
    )
    with pytest.raises(ConfigError, match=r"dependency cycle a -> b -> c -> a"):
        plan_stack(project)
    selfish = load("services: {a: {image: x, depends_on: [a]}}")
    with pytest.raises(ConfigError, match=r"cycle a -> a"):
        plan_stack(selfish)


def test_topological_order_keeps_file_order_for_independent_services() -> None:
    project = load(
        "services: {z: {image: x, depends_on: [y]}, y: {image: x}, m: {image: x}, "
        "a: {image: x, depends_on: [z, m]}}"
    )
    plan = plan_stack(project)
    assert plan.order == ("y", "z", "m", "a")
    assert plan.stop_order() == ("a", "m", "z", "y")


# ---------------------------------------------------------------- project names


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("My App", "myapp"),
        ("_dir-1", "dir-1"),
        ("compose.example", "composeexample"),
        ("a_b", "a_b"),
    ],
)
def test_normalize_project_name(raw: str, expected: str) -> None:
    assert normalize_project_name(raw) == expected


def test_normalize_project_name_empty_is_error() -> None:
    with pytest.raises(ConfigError, match="cannot derive one from '...'"):
        normalize_project_name("...")


def test_project_name_precedence() -> None:
    doc = "name: fromfile\nservices: {a: {image: x}}"
    assert load(doc).name == "fromfile"
    assert load(doc, project_name="explicit").name == "explicit"
    assert load("services: {a: {image: x}}", default_project="dir").name == "dir"
    with pytest.raises(ConfigError, match="project name"):
        load_compose(yaml.safe_load("services: {a: {image: x}}"))
    with pytest.raises(ConfigError, match="project name 'UP'"):
        check_project_name("UP")


# ---------------------------------------------------------------- interpolation


def test_interpolation() -> None:
    env = {"A": "1", "E": ""}
    w: list[str] = []
    assert interpolate("$A ${A} $$A ${E:-d} ${E-d} ${U:-d} ${A:+y} ${U+y}", env, "p", w) == (
        "1 1 $A d  d y "
    )
    assert w == []
    assert interpolate("x${MISSING}y", env, "p.q", w) == "xy"
    assert w == ["p.q: variable MISSING is not set, using an empty string"]
    with pytest.raises(ConfigError, match=r"p: required variable E is missing: need it"):
        interpolate("${E:?need it}", env, "p", w)
    with pytest.raises(ConfigError, match=r"p: invalid interpolation '\$\{1x\}'"):
        interpolate("${1x}", env, "p", w)


def test_interpolation_applies_to_the_file_with_paths() -> None:
    project = load(
        "services: {a: {image: '${IMG:-busybox}', ports: ['${PORT}:80'], command: echo $$HOME}}",
        environ={"PORT": "8081"},
    )
    a = project.services["a"]
    assert a.image == "busybox"
    assert a.ports[0].host_port == 8081
    assert a.command == ("echo", "$HOME")
    # without an environ the text is taken literally
    raw = load("services: {a: {image: '${IMG:-busybox}'}}")
    assert raw.services["a"].image == "${IMG:-busybox}"
    message = err("services: {a: {image: x, ports: ['${NOPE:?set NOPE}:80']}}", environ={})
    assert "services.a.ports[0]: required variable NOPE" in message


# ---------------------------------------------------------------- plan → requests


def test_container_specs_for_the_daemon() -> None:
    plan = plan_stack(load(TWO_TIER, environ={}))
    specs = plan.container_specs()
    assert [s.name for s in specs] == ["proj-backend-1", "proj-web-1"]
    backend, web = specs
    assert backend.hostname == "backend"
    assert [(a.name, a.aliases, a.internal) for a in backend.networks] == [
        ("proj_back", ["backend", "api", "db"], True)
    ]
    assert [(a.name, a.aliases, a.internal) for a in web.networks] == [
        ("proj_front", ["web"], False),
        ("proj_back", ["web"], True),
    ]
    assert web.stack == "proj"
    assert web.stack_services is not None
    assert set(web.stack_services) == {"web", "backend"}
    assert web.stack_services == backend.stack_services
    assert web.labels[PROJECT_LABEL] == "proj"
    assert web.labels[SERVICE_LABEL] == "web"
    assert web.restart == "no" and web.healthcheck is None
    assert web.command == ["httpd", "-f", "-p", "80"]
    body = plan.create_request("web")
    assert body["start"] is True
    assert ContainerSpec.model_validate({k: v for k, v in body.items() if k != "start"}) == web


def test_config_hash_changes_with_config_only() -> None:
    a = plan_stack(load(TWO_TIER)).container_spec("web").labels[CONFIG_HASH_LABEL]
    b = plan_stack(load(TWO_TIER)).container_spec("web").labels[CONFIG_HASH_LABEL]
    c = plan_stack(load(TWO_TIER.replace("8080:80", "8081:80"))).container_spec("web")
    assert a == b
    assert c.labels[CONFIG_HASH_LABEL] != a


def test_restart_policies_go_to_nyxd_in_the_spec() -> None:
    plan = plan_stack(
        load(
            """
services:
  a: {image: x, restart: 'on-failure:2'}
  b: {image: x}
  c: {image: x, restart: always}
  d: {image: x, restart: unless-stopped}
  e: {image: x, restart: "no"}
  f: {image: x, restart: false}
"""
        )
    )
    got = {s: plan.container_spec(s).restart for s in "abcdef"}
    assert got == {
        "a": "on-failure:2",
        "b": "no",
        "c": "always",
        "d": "unless-stopped",
        "e": "no",
        "f": "no",
    }
    assert not any(k.endswith(".restart") for k in plan.container_spec("a").labels)


def test_healthcheck_and_depends_on_conditions() -> None:
    project = load(
        """
services:
  db:
    image: x
    healthcheck:
      test: pg_isready -U app
      interval: 1m30s
      timeout: 500ms
      retries: 5
      start_period: 10s
      start_interval: 1s
  listed: {image: x, healthcheck: {test: [CMD, /bin/check, --deep]}}
  quiet: {image: x, healthcheck: {disable: true}}
  tuned: {image: x, healthcheck: {interval: 5s}}
  migrate: {image: x, depends_on: {db: {condition: service_healthy}}}
  web:
    image: x
    depends_on:
      db: {condition: service_healthy}
      migrate: {condition: service_completed_successfully}
      listed: {condition: service_started}
      quiet:
"""
    )
    assert project.warnings == ()
    s = project.services
    assert s["db"].healthcheck == Healthcheck(
        test=["CMD-SHELL", "pg_isready -U app"],
        interval=90,
        timeout=0.5,
        retries=5,
        start_period=10,
        start_interval=1,
    )
    assert s["listed"].healthcheck == Healthcheck(test=["CMD", "/bin/check", "--deep"])
    assert s["quiet"].healthcheck == Healthcheck(test=["NONE"])
    assert s["tuned"].healthcheck == Healthcheck(interval=5)  # the image's test
    assert s["web"].healthcheck is None
    web = s["web"]
    assert web.depends_on == ("db", "migrate", "listed", "quiet")
    assert [web.condition(d) for d in web.depends_on] == [
        "service_healthy",
        "service_completed_successfully",
        "service_started",
        "service_started",
    ]
    plan = plan_stack(project)
    assert plan.order.index("migrate") < plan.order.index("web")
    spec = plan.container_spec("db")
    assert spec.healthcheck == s["db"].healthcheck
    body = plan.create_request("db")
    assert body["healthcheck"]["test"] == ["CMD-SHELL", "pg_isready -U app"]
    ContainerSpec.model_validate({k: v for k, v in body.items() if k != "start"}, strict=True)


def test_example_file_is_valid() -> None:
    project = load_compose(yaml.safe_load(EXAMPLE.read_text()), environ={})
    assert project.warnings == ()
    plan = plan_stack(project)
    assert plan.order == ("backend", "web")
    assert project.networks["back"].internal


# ---------------------------------------------------------------- DNS policy table


ALL_INTERNAL = """
services:
  a: {image: x, networks: [i1]}
  b: {image: x, networks: [i1, i2]}
networks: {i1: {internal: true}, i2: {internal: true}}
"""
MIXED = TWO_TIER
DEFAULT_ONLY = "services: {a: {image: x}, b: {image: x}}"
DEFAULT_INTERNAL = "services: {a: {image: x}}\nnetworks: {default: {internal: true}}"


@pytest.mark.parametrize(
    ("mode", "driver", "doc", "embedded", "resolv"),
    [
        # auto: native (and any non-cni driver) -> embedded for every container
        ("auto", "native", ALL_INTERNAL, True, "provider"),
        ("auto", "native", MIXED, True, "provider"),
        ("auto", "native", DEFAULT_ONLY, True, "provider"),
        ("auto", "loopback", MIXED, True, "provider"),
        # auto + cni: embedded only when every service is solely on internal networks
        ("auto", "cni", ALL_INTERNAL, True, "provider"),
        ("auto", "cni", DEFAULT_INTERNAL, True, "provider"),
        ("auto", "cni", MIXED, False, "driver"),
        ("auto", "cni", DEFAULT_ONLY, False, "driver"),
        # embedded: always, both drivers
        ("embedded", "native", MIXED, True, "provider"),
        ("embedded", "cni", MIXED, True, "provider"),
        ("embedded", "cni", DEFAULT_ONLY, True, "provider"),
        # cni: never embedded, CNI-side DNS
        ("cni", "native", ALL_INTERNAL, False, "driver"),
        ("cni", "cni", ALL_INTERNAL, False, "driver"),
        # off: nothing, no resolv.conf override
        ("off", "native", ALL_INTERNAL, False, "none"),
        ("off", "cni", ALL_INTERNAL, False, "none"),
    ],
)
def test_dns_policy_table_with_planned_stacks(
    mode: DnsMode, driver: str, doc: str, embedded: bool, resolv: str
) -> None:
    plan = plan_stack(load(doc))
    caps = NetworkBackend.load(driver).capabilities()
    decision = dns_policy(mode, caps, plan.dns_stack())
    assert (decision.use_provider, decision.resolv_conf) == (embedded, resolv)


def test_dns_stack_matches_stack_services() -> None:
    plan = plan_stack(load(MIXED))
    stack = plan.dns_stack()
    assert {s: [(n.name, n.internal) for n in nets] for s, nets in stack.items()} == {
        "web": [("proj_front", False), ("proj_back", True)],
        "backend": [("proj_back", True)],
    }
    # what the daemon derives from the request equals what the planner computed
    spec = plan.container_spec("web")
    assert spec.stack_services is not None
    from_request = {
        s: [(a.name, a.internal) for a in st.networks] for s, st in spec.stack_services.items()
    }
    assert from_request == {s: [(n.name, n.internal) for n in v] for s, v in stack.items()}


def test_published_service_gets_a_non_internal_network_first() -> None:
    project = load(
        """
services:
  web: {image: x, ports: ["80:80"], networks: [back, front]}
  worker: {image: x, networks: [back, front]}
  hidden: {image: x, ports: ["81:80"], networks: [back]}
networks: {back: {internal: true}, front: {}}
"""
    )
    plan = plan_stack(project)
    assert [a.name for a in plan.attachments("web")] == ["proj_front", "proj_back"]
    assert [a.name for a in plan.attachments("worker")] == ["proj_back", "proj_front"]
    assert project.warnings == (
        "services.hidden.ports: the service is only on internal networks, "
        "its published ports cannot be reached from outside",
    )
