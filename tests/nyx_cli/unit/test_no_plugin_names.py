"""Core and the daemon never name a concrete plugin (issue 12): they read capabilities.

Every string literal and import in nyx_core's and nyx_cli's sources is checked. The only
places the words ``native``, ``cni`` and ``embedded`` may appear are the spec's ``--dns``
vocabulary (``auto``/``embedded``/``cni``/``off``: the ``DnsMode`` literal and comparisons
of a mode or ``settings.dns`` against it) and the two defaults (``--net-driver native``,
``--dns-provider embedded``). Docstrings and comments are free to explain.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SOURCES = sorted(
    [*(ROOT / "nyx_core" / "src").rglob("*.py"), *(ROOT / "nyx_cli" / "src").rglob("*.py")]
)
NAMES = {"native", "cni", "embedded"}
PACKAGES = ("nyx_plugins_native", "nyx_plugins_cni", "nyx_dns_embedded")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def _is_mode(node: ast.AST) -> bool:
    """``mode`` or ``<anything>.dns``: a value of the spec's --dns vocabulary."""
    return (isinstance(node, ast.Name) and node.id == "mode") or (
        isinstance(node, ast.Attribute) and node.attr == "dns"
    )


def offences(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    allowed: set[int] = set()
    for node in ast.walk(tree):
        # docstrings
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            allowed.add(id(node.value))
        # DnsMode = Literal["auto", "embedded", "cni", "off"]
        if isinstance(node, ast.Subscript) and getattr(node.value, "id", "") == "Literal":
            allowed.update(id(n) for n in ast.walk(node.slice))
        # Field(default="native") / Field(default="embedded")
        if isinstance(node, ast.keyword) and node.arg == "default":
            allowed.add(id(node.value))
        # mode == "cni", settings.dns not in ("off", "cni")
        if isinstance(node, ast.Compare) and any(
            _is_mode(n) for n in [node.left, *node.comparators]
        ):
            for n in [node.left, *node.comparators]:
                allowed.update(id(x) for x in ast.walk(n))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            named = text in NAMES or any(p in text for p in PACKAGES)
            if named and id(node) not in allowed:
                found.append(f"{_rel(path)}:{node.lineno}: {text!r}")
        if isinstance(node, ast.Import | ast.ImportFrom):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            for mod in mods:
                if mod and mod.split(".")[0] in PACKAGES:
                    found.append(f"{_rel(path)}:{node.lineno}: imports {mod}")
    return found


def test_the_sources_are_found() -> None:
    names = {p.name for p in SOURCES}
    assert {"_supervisor.py", "_plugins.py", "_policy.py", "_boot.py"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_plugin_names_outside_the_dns_vocabulary_and_defaults(path: Path) -> None:
    assert offences(path) == []


def test_the_check_catches_what_it_must(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        '"""A docstring may say native."""\n'
        "import nyx_plugins_cni\n"
        'if backend.name != "cni":\n'
        "    pass\n"
        'DnsFacade.load("embedded")\n'
        'mode = "native"\n'
        'ok = settings.dns in ("off", "cni")\n'
    )
    got = sorted(line.split(": ", 1)[1] for line in offences(bad))
    assert got == ["'cni'", "'embedded'", "'native'", "imports nyx_plugins_cni"]
