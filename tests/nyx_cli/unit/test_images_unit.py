"""Image references, the container process (docker's rules) and user resolution: no root."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from nyx_cli.errors import ImageError
from nyx_cli.images import Image, canonical_reference, normalize_tag
from nyx_cli.runtime import ProcessSpec, process_from_image, resolve_user
from nyx_cli.runtime._process import DEFAULT_PATH
from nyx_core.errors import ConfigError, NyxError

NGINX = {
    "Entrypoint": ["/docker-entrypoint.sh"],
    "Cmd": ["nginx", "-g", "daemon off;"],
    "Env": ["PATH=/usr/sbin:/usr/bin", "NGINX_VERSION=1.25"],
    "WorkingDir": "/srv",
    "User": "www-data",
}
BUSYBOX = {"Cmd": ["sh"]}


def run(config: dict[str, object], **kw: object) -> ProcessSpec:
    args: dict[str, object] = {
        "entrypoint": None,
        "command": None,
        "env": {},
        "workdir": None,
        "user": None,
    }
    args.update(kw)
    return process_from_image(config, **args)  # type: ignore[arg-type]


# -- references ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "tag", "canonical"),
    [
        ("busybox", "busybox:latest", "docker.io/library/busybox:latest"),
        ("busybox:nyx", "busybox:nyx", "docker.io/library/busybox:nyx"),
        ("user/app", "user/app:latest", "docker.io/user/app:latest"),
        (
            "docker.io/library/nginx:alpine",
            "docker.io/library/nginx:alpine",
            "docker.io/library/nginx:alpine",
        ),
        ("localhost:5000/app:1", "localhost:5000/app:1", "localhost:5000/app:1"),
        ("registry.example/a/b", "registry.example/a/b:latest", "registry.example/a/b:latest"),
    ],
)
def test_reference_normalisation(ref: str, tag: str, canonical: str) -> None:
    assert normalize_tag(ref) == tag
    assert canonical_reference(ref) == canonical


def test_canonical_reference_keeps_digest() -> None:
    digest = "sha256:" + "a" * 64
    assert canonical_reference(f"nginx@{digest}") == f"docker.io/library/nginx@{digest}"


@pytest.mark.parametrize("bad", ["", "Busybox", "busy box", "nginx:bad/tag", "x@sha256:zz"])
def test_bad_reference_is_a_nyx_error_naming_it(bad: str) -> None:
    with pytest.raises(ImageError) as info:
        normalize_tag(bad)
    assert isinstance(info.value, NyxError)
    assert isinstance(info.value, ConfigError)  # a client error (HTTP 400)
    assert repr(bad) in str(info.value)


def test_image_model_defaults() -> None:
    image = Image(id="sha256:" + "0" * 64)
    assert image.repo_tags == [] and image.layers == [] and image.digest is None


# -- process_from_image --------------------------------------------------------------------


def test_image_cmd_is_the_default() -> None:
    proc = run(BUSYBOX)
    assert proc.args == ["sh"]
    assert proc.cwd == "/"
    assert proc.user is None
    assert proc.env == [f"PATH={DEFAULT_PATH}"]


def test_command_replaces_cmd_and_keeps_entrypoint() -> None:
    proc = run(NGINX, command=["nginx", "-T"])
    assert proc.args == ["/docker-entrypoint.sh", "nginx", "-T"]
    assert run(NGINX).args == ["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"]


def test_empty_command_means_the_image_cmd() -> None:
    assert run(BUSYBOX, command=[]).args == ["sh"]


def test_entrypoint_override_drops_the_image_cmd() -> None:
    assert run(NGINX, entrypoint=["/bin/sh"]).args == ["/bin/sh"]
    assert run(NGINX, entrypoint=["/bin/sh"], command=["-c", "id"]).args == ["/bin/sh", "-c", "id"]


@pytest.mark.parametrize("cleared", [[], [""]])
def test_empty_entrypoint_clears_it(cleared: list[str]) -> None:
    assert run(NGINX, entrypoint=cleared).args == ["nginx", "-g", "daemon off;"]
    assert run(NGINX, entrypoint=cleared, command=["id"]).args == ["id"]


def test_string_entrypoint_in_config_is_one_word() -> None:
    assert run({"Entrypoint": "/init", "Cmd": ["a"]}).args == ["/init", "a"]


def test_nothing_to_run_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="command"):
        run({})
    with pytest.raises(ConfigError, match="command"):
        run({"Entrypoint": ["x"]}, entrypoint=[])


def test_env_merge_request_wins_and_path_is_kept() -> None:
    proc = run(NGINX, env={"NGINX_VERSION": "2", "FOO": "a=b"})
    env = dict(e.split("=", 1) for e in proc.env)
    assert env == {"PATH": "/usr/sbin:/usr/bin", "NGINX_VERSION": "2", "FOO": "a=b"}


def test_path_default_and_override() -> None:
    assert f"PATH={DEFAULT_PATH}" in run(BUSYBOX).env
    assert "PATH=/x" in run(BUSYBOX, env={"PATH": "/x"}).env


@pytest.mark.parametrize("key", ["", "A=B", "NUL\0"])
def test_bad_env_name_is_a_config_error(key: str) -> None:
    with pytest.raises(ConfigError, match="env"):
        run(BUSYBOX, env={key: "1"})


def test_workdir_from_image_request_and_validation() -> None:
    assert run(NGINX).cwd == "/srv"
    assert run(NGINX, workdir="/tmp/x/").cwd == "/tmp/x"
    with pytest.raises(ConfigError, match="workdir"):
        run(NGINX, workdir="relative")


def test_user_from_image_and_request() -> None:
    assert run(NGINX).user == "www-data"
    assert run(NGINX, user="1000:1000").user == "1000:1000"
    assert run(BUSYBOX, user="").user is None


def test_bad_image_cmd_type_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="Cmd"):
        run({"Cmd": [1, 2]})


# -- resolve_user --------------------------------------------------------------------------


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        "www-data:x:33:33:www:/var/www:/bin/false\n"
        "app:x:1000:1000::/home/app:/bin/sh\n"
    )
    (root / "etc" / "group").write_text(
        "root:x:0:\nwww-data:x:33:\napp:x:1000:\nstaff:x:50:app,other\nvideo:x:44:app\n"
    )
    return root


def test_default_user_is_root(rootfs: Path) -> None:
    assert resolve_user(rootfs, None) == (0, 0, [], "/root")


def test_user_by_name_gets_primary_and_supplementary_groups(rootfs: Path) -> None:
    assert resolve_user(rootfs, "app") == (1000, 1000, [44, 50], "/home/app")
    assert resolve_user(rootfs, "www-data") == (33, 33, [], "/var/www")


def test_user_by_uid(rootfs: Path) -> None:
    assert resolve_user(rootfs, "33") == (33, 33, [], "/var/www")
    assert resolve_user(rootfs, "4242") == (4242, 0, [], "/")


def test_user_with_group(rootfs: Path) -> None:
    assert resolve_user(rootfs, "app:staff") == (1000, 50, [], "/home/app")
    assert resolve_user(rootfs, "4242:4343") == (4242, 4343, [], "/")


def test_unknown_names_are_config_errors(rootfs: Path) -> None:
    with pytest.raises(ConfigError, match="'nobody'"):
        resolve_user(rootfs, "nobody")
    with pytest.raises(ConfigError, match="'wheel'"):
        resolve_user(rootfs, "app:wheel")


def test_passwd_symlink_resolves_inside_the_rootfs(rootfs: Path) -> None:
    (rootfs / "data").mkdir()
    (rootfs / "etc" / "passwd").rename(rootfs / "data" / "passwd")
    (rootfs / "etc" / "passwd").symlink_to("/data/passwd")  # absolute: means rootfs/data
    assert resolve_user(rootfs, "app")[0] == 1000


# -- image files are read only when regular, small and inside the rootfs -------------------


def _resolve_in_child(rootfs: Path, user: str) -> str:
    """``resolve_user`` in a child limited to 1 GiB of memory: what it returned or raised.

    Code that reads ``/dev/zero`` or blocks on a FIFO fails there (MemoryError, the hang
    guard) instead of taking the test run down.
    """
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from pathlib import Path\n"
        "from nyx_cli.runtime._process import resolve_user\n"
        "try:\n"
        "    print(resolve_user(Path(sys.argv[1]), sys.argv[2]))\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, str(rootfs), user],
            capture_output=True,
            text=True,
            timeout=120,  # a hang guard, not a speed assertion
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "hung"
    return (proc.stdout + proc.stderr).strip().splitlines()[-1]


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_passwd_that_is_a_device_is_not_read(rootfs: Path) -> None:
    (rootfs / "etc" / "passwd").unlink()
    os.mknod(rootfs / "etc" / "passwd", stat.S_IFCHR | 0o644, os.makedev(1, 5))  # /dev/zero
    assert _resolve_in_child(rootfs, "0") == "(0, 0, [], '/')"
    assert _resolve_in_child(rootfs, "app") == (
        "ConfigError user: 'app' not found in the image's /etc/passwd "
        "(/etc/passwd is a character device in the image, not read)"
    )


def test_passwd_that_is_a_fifo_is_not_read(rootfs: Path) -> None:
    (rootfs / "etc" / "passwd").unlink()
    os.mkfifo(rootfs / "etc" / "passwd")
    assert _resolve_in_child(rootfs, "4242") == "(4242, 0, [], '/')"
    assert "is a FIFO in the image, not read" in _resolve_in_child(rootfs, "app")


def test_huge_group_file_is_not_read(rootfs: Path) -> None:
    with open(rootfs / "etc" / "group", "r+b") as f:
        f.seek(64 << 20)  # sparse: 64 MiB without using the disk
        f.write(b"\nbig:x:77:app\n")
    with pytest.raises(ConfigError, match=r"group 'big' not found .*larger than 4 MiB"):
        resolve_user(rootfs, "app:big")
    assert resolve_user(rootfs, "app") == (1000, 1000, [], "/home/app")  # no extra groups


def test_symlinks_never_leave_the_rootfs(rootfs: Path, tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "passwd").write_text("intruder:x:0:0::/:/bin/sh\n")
    (rootfs / "etc" / "passwd").unlink()
    (rootfs / "etc" / "passwd").symlink_to(host / "passwd")  # absolute host path
    with pytest.raises(ConfigError, match="'intruder' not found"):
        resolve_user(rootfs, "intruder")
    (rootfs / "etc" / "passwd").unlink()
    (rootfs / "etc" / "passwd").symlink_to("../" * 12 + str(host / "passwd").lstrip("/"))
    with pytest.raises(ConfigError, match="'intruder' not found"):
        resolve_user(rootfs, "intruder")
    (rootfs / "etc" / "passwd").unlink()
    shutil.rmtree(rootfs / "etc")
    (rootfs / "etc").symlink_to(host)  # a directory on the way
    with pytest.raises(ConfigError, match="'intruder' not found"):
        resolve_user(rootfs, "intruder")
    (rootfs / "etc").unlink()
    (rootfs / "etc").symlink_to("etc")  # a loop: not read, numeric ids still work
    assert resolve_user(rootfs, "7") == (7, 0, [], "/")
    with pytest.raises(ConfigError, match="cannot be resolved in the image"):
        resolve_user(rootfs, "app")


def test_state_dir_is_made_private_and_its_tmp_emptied(tmp_path: Path) -> None:
    from nyx_cli.daemon._serve import _private_state_dir

    state = tmp_path / "state"
    (state / "tmp" / "pull-0123" / "blobs").mkdir(parents=True)
    (state / "tmp" / "upload-0123").write_bytes(b"half an upload")
    (state / "images").mkdir()
    state.chmod(0o755)
    _private_state_dir(state)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert list((state / "tmp").iterdir()) == []
    assert (state / "images").is_dir()
