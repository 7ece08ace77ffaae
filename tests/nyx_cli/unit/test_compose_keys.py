"""docs/compose.md's tables of every Compose key are true: each lists every key of the
Compose Specification for its place, and each key's status (done / warning / refused) is what
the loader does with it: a done key is read, a warning key is a warning naming its path, a
refused key an error naming its path."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from nyx_cli.compose._keys import INFORMATIONAL, REFUSED, SCOPES, SPEC_KEYS
from nyx_cli.compose._project import KNOWN_KEYS, load_compose
from nyx_core import ConfigError

DOC = Path(__file__).resolve().parents[3] / "docs" / "compose.md"

HEADINGS = {
    "### Top level": "top",
    "### Services: `services.<name>.<key>`": "service",
    "### A service's networks: `services.<name>.networks.<network>.<key>`": "service_network",
    "### Networks: `networks.<name>.<key>`": "network",
    "### IPAM: `networks.<name>.ipam.<key>`": "ipam",
    "### IPAM config: `networks.<name>.ipam.config[0].<key>`": "ipam_config",
}
GENERIC = "not supported by nyx (it would change what runs)"
_ROW = re.compile(r"^\| `([a-z0-9_]+)` \| (done|warning|refused) \| .+ \|$")


def _tables() -> dict[str, dict[str, str]]:
    tables: dict[str, dict[str, str]] = {}
    scope = None
    for line in DOC.read_text().splitlines():
        if line.startswith("#"):
            scope = HEADINGS.get(line)
            if scope is not None:
                tables[scope] = {}
            continue
        if scope is not None and line.startswith("| `"):
            m = _ROW.match(line)
            assert m, f"docs/compose.md: malformed row {line!r}"
            assert m.group(1) not in tables[scope], f"{scope}: {m.group(1)} listed twice"
            tables[scope][m.group(1)] = m.group(2)
    return tables


TABLES = _tables()


def _status(scope: str, key: str) -> str:
    if key in KNOWN_KEYS[scope]:
        return "done"
    if key in INFORMATIONAL.get(scope, {}):
        return "warning"
    return "refused"


def test_every_scope_has_a_table_of_every_compose_key() -> None:
    assert set(TABLES) == set(SCOPES)
    for scope in SCOPES:
        assert set(TABLES[scope]) == SPEC_KEYS[scope], scope
        assert KNOWN_KEYS[scope] <= SPEC_KEYS[scope], scope
        assert set(INFORMATIONAL.get(scope, {})) <= SPEC_KEYS[scope] - KNOWN_KEYS[scope]


@pytest.mark.parametrize("scope", SCOPES)
def test_each_status_is_what_the_loader_does(scope: str) -> None:
    wrong = {
        key: (said, _status(scope, key))
        for key, said in TABLES[scope].items()
        if said != _status(scope, key)
    }
    assert not wrong, f"{scope}: key: (docs/compose.md says, the loader does) {wrong}"


def _placed(scope: str, key: str) -> tuple[dict[str, Any], str]:
    """A minimal file with ``key`` (value None) at ``scope``, and that key's path."""
    svc: dict[str, Any] = {"image": "x", "networks": {"n": None}}
    net: dict[str, Any] = {}
    doc: dict[str, Any] = {"services": {"s": svc}, "networks": {"n": net}}
    if scope == "top":
        doc[key] = None
        return doc, key
    if scope == "service":
        svc[key] = None
        return doc, f"services.s.{key}"
    if scope == "service_network":
        svc["networks"] = {"n": {key: None}}
        return doc, f"services.s.networks.n.{key}"
    if scope == "network":
        net[key] = None
        return doc, f"networks.n.{key}"
    if scope == "ipam":
        net["ipam"] = {key: None}
        return doc, f"networks.n.ipam.{key}"
    net["ipam"] = {"config": [{key: None}]}
    return doc, f"networks.n.ipam.config[0].{key}"


CASES = [(scope, key) for scope in SCOPES for key in sorted(SPEC_KEYS[scope])]


@pytest.mark.parametrize(("scope", "key"), CASES, ids=[f"{s}.{k}" for s, k in CASES])
def test_the_loader_refuses_warns_or_reads_each_key(scope: str, key: str) -> None:
    """A refused key is an error naming its path and why; a warning key a warning naming
    its path; a done key is read (its value None may well be a bad value: that error names
    the value, it does not refuse the key)."""
    doc, path = _placed(scope, key)
    status = TABLES[scope][key]
    refusal = f"{path}: {REFUSED.get(scope, {}).get(key, GENERIC)}"
    try:
        project = load_compose(doc, default_project="p")
    except ConfigError as exc:
        assert (status == "refused") == (refusal in str(exc)), f"{path} ({status}): {exc}"
        if status == "warning":
            pytest.fail(f"{path} is a warning in the docs but the file is refused: {exc}")
        return
    warned = [w for w in project.warnings if w.startswith(f"{path}: ")]
    assert status != "refused", f"{path} is refused in the docs but loads"
    assert (status == "warning") == bool(warned), f"{path} ({status}): {project.warnings}"


def test_an_unknown_key_is_refused_everywhere() -> None:
    for scope in SCOPES:
        doc, path = _placed(scope, "frobnicate")
        with pytest.raises(ConfigError, match=re.escape(f"{path}: unknown key")):
            load_compose(doc, default_project="p")
