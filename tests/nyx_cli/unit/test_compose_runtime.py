"""Compose keys about mounts and how a container runs: volumes, tmpfs, secrets, configs,
env_file, working_dir, user, stop_signal, stop_grace_period, cap_add/cap_drop, labels,
init, and build: refused. Pure: files are read through the plan's reader."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import yaml

from nyx_cli.compose._plan import ComposePlan, plan_stack
from nyx_cli.compose._project import (
    PROJECT_LABEL,
    SERVICE_LABEL,
    load_compose,
)
from nyx_cli.compose._service_runtime import VOLUME_LABEL, duration
from nyx_cli.daemon._models import Mount
from nyx_core.errors import ConfigError

FILES = {
    "/proj/pw.txt": b"hunter2\n",
    "/proj/nginx.conf": b"server {}\n",
    "/proj/.env.db": b"# comment\nA=from-file\nB='quoted value'\nexport C=3\nHOME\n",
    "/proj/second.env": b"A=second\n",
}


def read(path: str) -> bytes:
    if path not in FILES:
        raise FileNotFoundError(2, "No such file or directory", path)
    return FILES[path]


def plan(text: str, environ: dict[str, str] | None = None) -> ComposePlan:
    project = load_compose(
        yaml.safe_load(text),
        default_project="shop",
        environ={"HOME": "/root", **(environ or {})},
        project_dir="/proj",
    )
    return plan_stack(project, read_file=read)


def err(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        plan(text).container_specs()
    return str(info.value)


STACK = """
services:
  db:
    image: postgres
    volumes:
      - pgdata:/var/lib/postgresql/data
      - ./init:/docker-entrypoint-initdb.d:ro
      - /tmp/cache
      - type: bind
        source: /srv/www
        target: /www
        read_only: true
      - type: volume
        source: logs
        target: /logs
        volume: {nocopy: true}
      - type: tmpfs
        target: /scratch
        tmpfs: {size: 64m, mode: 01777}
    tmpfs: /run
    secrets: [db_password, {source: api_key, target: key, uid: "999", mode: 0400}]
    configs: [{source: nginx, target: /etc/nginx/nginx.conf}]
    env_file: [.env.db, {path: missing.env, required: false}]
    environment: {B: env-wins}
    working_dir: /srv
    user: postgres
    stop_signal: SIGINT
    stop_grace_period: 1m30s
    cap_add: [sys_nice]
    cap_drop: [NET_RAW]
    labels: {team: db}
    init: true
volumes:
  pgdata: {}
  logs: {name: shared-logs, labels: [tier=db]}
  unused: {}
secrets:
  db_password: {file: ./pw.txt}
  api_key: {environment: API_KEY}
configs:
  nginx: {file: nginx.conf}
"""


def test_every_key_reaches_the_container_spec() -> None:
    p = plan(STACK, {"API_KEY": "k-123"})
    spec = p.container_spec("db")
    assert spec.mounts == [
        Mount(type="volume", source="shop_pgdata", target="/var/lib/postgresql/data"),
        Mount(
            type="bind", source="/proj/init", target="/docker-entrypoint-initdb.d", readonly=True
        ),
        Mount(type="volume", target="/tmp/cache"),
        Mount(type="bind", source="/srv/www", target="/www", readonly=True),
        Mount(type="volume", source="shared-logs", target="/logs", nocopy=True),
        Mount(type="tmpfs", target="/scratch", tmpfs_size=64 << 20, tmpfs_mode=0o1777),
        Mount(type="tmpfs", target="/run"),
    ]
    files = {f.target: (f.name, base64.b64decode(f.data), f.mode, f.uid) for f in spec.files}
    assert files == {
        "/run/secrets/db_password": ("db_password", b"hunter2\n", 0o444, 0),
        "/run/secrets/key": ("api_key", b"k-123", 0o400, 999),
        "/etc/nginx/nginx.conf": ("nginx", b"server {}\n", 0o444, 0),
    }
    assert spec.env == {"A": "from-file", "B": "env-wins", "C": "3", "HOME": "/root"}
    assert (spec.workdir, spec.user, spec.stop_signal, spec.stop_timeout) == (
        "/srv",
        "postgres",
        "SIGINT",
        90.0,
    )
    assert spec.cap_add == ["CAP_SYS_NICE"] and spec.cap_drop == ["CAP_NET_RAW"]
    assert spec.init is True
    assert spec.labels["team"] == "db" and spec.labels[PROJECT_LABEL] == "shop"
    assert spec.labels[SERVICE_LABEL] == "db"
    assert p.project.services["db"].runtime.create_paths == ("/proj/init",)
    assert [v.name for v in p.volumes()] == ["shop_pgdata", "shared-logs"]
    assert p.volumes()[1].request("shop")["labels"] == {
        "tier": "db",
        PROJECT_LABEL: "shop",
        VOLUME_LABEL: "logs",
    }
    assert "volumes.unused: not used by any service, not created" in p.project.warnings


def test_a_changed_secret_changes_the_config_hash() -> None:
    text = STACK
    first = plan(text, {"API_KEY": "a"}).create_request("db")["labels"]
    second = plan(text, {"API_KEY": "b"}).create_request("db")["labels"]
    assert first["com.nyx.compose.config-hash"] != second["com.nyx.compose.config-hash"]


def test_later_env_files_win_and_environment_beats_them() -> None:
    spec = plan(
        "services: {a: {image: x, env_file: [.env.db, second.env], environment: [C=env]}}"
    ).container_spec("a")
    assert spec.env["A"] == "second" and spec.env["C"] == "env"


def test_external_volumes_keep_their_name() -> None:
    p = plan(
        "services: {a: {image: x, volumes: [data:/d, old:/o]}}\n"
        "volumes: {data: {external: true}, old: {external: {name: legacy}}}"
    )
    assert [(v.name, v.external) for v in p.volumes()] == [("data", True), ("legacy", True)]


@pytest.mark.parametrize(
    ("doc", "fragments"),
    [
        ("services: {a: {build: .}}", ["services.a.build:", "nyx load", "image:"]),
        ("services: {a: {image: x, build: .}}", ["services.a.build:", "build it elsewhere"]),
        (
            "services: {a: {image: x, volumes: [db:/d]}}",
            ["services.a.volumes[0]", "'db'", "not declared in the top-level volumes"],
        ),
        ("services: {a: {image: x, volumes: ['a:b:c:d']}}", ["services.a.volumes[0]"]),
        ("services: {a: {image: x, volumes: ['/x:/y:shared']}}", ["mode 'shared'"]),
        ("services: {a: {image: x, volumes: ['/x:/etc/hosts']}}", ["nyx manages this file"]),
        ("services: {a: {image: x, volumes: ['/x:rel:ro']}}", ["must be an absolute path"]),
        ("services: {a: {image: x, volumes: ['/x:/d', '/y:/d']}}", ["two mounts"]),
        (
            "services: {a: {image: x, volumes: [{type: npipe, source: a, target: /b}]}}",
            ["services.a.volumes[0].type", "bind, volume or tmpfs"],
        ),
        (
            "services: {a: {image: x, volumes: [{type: bind, source: /a, target: /b, "
            "bind: {propagation: shared}}]}}",
            ["bind.propagation", "rprivate"],
        ),
        (
            "services: {a: {image: x, volumes: [{type: volume, source: v, target: /b, "
            "volume: {subpath: x}}]}}\nvolumes: {v: {}}",
            ["services.a.volumes[0].volume.subpath", "not supported"],
        ),
        (
            "services: {a: {image: x, volumes: [{type: tmpfs, target: /b, tmpfs: {size: lots}}]}}",
            ["tmpfs.size", "'lots'"],
        ),
        ("services: {a: {image: x, tmpfs: ['/t:uid=1']}}", ["services.a.tmpfs", "'uid=1'"]),
        (
            "services: {a: {image: x, volumes: [v:/d]}}\nvolumes: {v: {driver: nfs}}",
            ["volumes.v.driver", "only the local driver"],
        ),
        (
            "services: {a: {image: x, volumes: [v:/d]}}\nvolumes: {v: {driver_opts: {type: nfs}}}",
            ["volumes.v.driver_opts", "not supported"],
        ),
        ("services: {a: {image: x, secrets: [pw]}}", ["services.a.secrets[0]", "'pw'"]),
        (
            "services: {a: {image: x, secrets: [pw]}}\nsecrets: {pw: {external: true}}",
            ["secrets.pw.external", "swarm"],
        ),
        (
            "services: {a: {image: x, secrets: [pw]}}\nsecrets: {pw: {file: nope.txt}}",
            ["secrets.pw.file", "/proj/nope.txt"],
        ),
        (
            "services: {a: {image: x, secrets: [pw]}}\nsecrets: {pw: {environment: NOPE}}",
            ["secrets.pw.environment", "NOPE", "not set"],
        ),
        (
            "services: {a: {image: x, configs: [{source: c, mode: rwx}]}}\n"
            "configs: {c: {content: x}}",
            ["services.a.configs[0].mode", "'rwx'"],
        ),
        ("services: {a: {image: x, env_file: nope.env}}", ["services.a.env_file[0]", "not found"]),
        ("services: {a: {image: x, working_dir: srv}}", ["services.a.working_dir", "absolute"]),
        ("services: {a: {image: x, stop_signal: SIGNOPE}}", ["services.a.stop_signal"]),
        ("services: {a: {image: x, stop_grace_period: soon}}", ["stop_grace_period", "'soon'"]),
        ("services: {a: {image: x, cap_add: [NET_MAGIC]}}", ["services.a.cap_add[0]", "MAGIC"]),
        ("services: {a: {image: x, init: 'yes'}}", ["services.a.init", "true or false"]),
    ],
)
def test_bad_values_name_the_key_path_and_the_value(doc: str, fragments: list[str]) -> None:
    message = err(doc)
    for fragment in fragments:
        assert fragment in message, message


def test_durations() -> None:
    assert duration("1m30s", "x") == 90
    assert duration("500ms", "x") == 0.5
    assert duration("1.5h", "x") == 5400
    assert duration(10, "x") == 10
    for bad in ("", "10", "1d", "-1s", True):
        with pytest.raises(ConfigError):
            duration(bad, "x")


def test_nothing_is_read_until_a_spec_is_built() -> None:
    text = "services: {a: {image: x, env_file: gone.env, secrets: [s]}}\n"
    text += "secrets: {s: {file: gone.txt}}"
    reads: list[str] = []

    def reader(path: str) -> Any:
        reads.append(path)
        raise FileNotFoundError(path)

    project = load_compose(yaml.safe_load(text), default_project="p", project_dir="/proj")
    p = plan_stack(project, read_file=reader)
    assert reads == [] and p.order == ("a",)  # `down` and `config` need no file


def test_config_output_reads_back_as_the_same_file(tmp_path: Any) -> None:
    from nyx_cli.compose._render import _Dumper, _normalized

    first = plan(STACK, {"API_KEY": "k"})
    text = yaml.dump(_normalized(first), Dumper=_Dumper, sort_keys=False)
    assert "k-123" not in text and "hunter2" not in text  # secrets are named, never shown
    project = load_compose(
        yaml.safe_load(text), environ={"API_KEY": "k", "HOME": "/root"}, project_dir="/proj"
    )
    again = plan_stack(project, read_file=read)
    assert again.container_spec("db") == first.container_spec("db")
    assert yaml.dump(_normalized(again), Dumper=_Dumper, sort_keys=False) == text
