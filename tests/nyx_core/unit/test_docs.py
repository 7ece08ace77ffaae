"""docs/ stays true to the code (datasette's test_docs.py idea)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import nyx_core
from nyx_core import NyxSettings, hookspecs

DOCS = Path(__file__).resolve().parents[3] / "docs"
HOOKS = sorted(
    name for name, obj in vars(hookspecs).items() if name.startswith("nyx_") and callable(obj)
)


def _headings() -> dict[str, str]:
    text = (DOCS / "hooks.md").read_text()
    return {m.group(1): m.group(2) for m in re.finditer(r"^### (nyx_\w+)\(([^)]*)\)", text, re.M)}


def test_hookspecs_found() -> None:
    assert len(HOOKS) == len(hookspecs.BACKEND_HOOKS) + len(hookspecs.DNS_HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_signature(hook: str) -> None:
    headings = _headings()
    assert hook in headings, f"{hook} has no '### {hook}(...)' heading in docs/hooks.md"
    params = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
    assert headings[hook] == params


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hookspec_docstring_follows_the_template(hook: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert ":returns:" in doc
    assert "Stops at first non-None result." in doc
    for param in inspect.signature(getattr(hookspecs, hook)).parameters:
        assert f":param {param}:" in doc, (hook, param)


def test_every_setting_is_in_the_networking_docs() -> None:
    text = (DOCS / "networking.md").read_text()
    for name in NyxSettings.model_fields:
        assert f"NYXD_{name.upper()}" in text, name


MODELS = [
    "BackendCapabilities",
    "NetworkSpec",
    "NetworkInfo",
    "PortMapping",
    "SetupOptions",
    "SetupResult",
    "InterfaceResult",
]


@pytest.mark.parametrize("model", MODELS)
def test_every_model_field_is_documented(model: str) -> None:
    text = (DOCS / "hooks.md").read_text()
    start = text.index(f"### {model}\n")
    section = text[start : text.find("\n### ", start + 1)]
    for field in getattr(nyx_core, model).model_fields:
        assert f"`{field}`" in section, f"{model}.{field} is not documented in docs/hooks.md"


def test_call_order_is_documented() -> None:
    text = (DOCS / "hooks.md").read_text()
    order = [
        "nyx_backend_capabilities",
        "nyx_backend_ensure_network(settings, options)",
        "nyx_backend_network_create",
        "nyx_dns_start",
        "reconciles",
        "nyx_backend_gc(container_ids)",
        "serves",
    ]
    section = text[text.index("## Call order") : text.index("## Backend hooks")]
    positions = [section.index(step) for step in order]
    assert positions == sorted(positions)
