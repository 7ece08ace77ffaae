"""docs/openapi.yaml and docs/api.md describe every route the API serves, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nyx_core._api import _ROUTES

DOCS = Path(__file__).resolve().parents[3] / "docs"


def served() -> set[tuple[str, str]]:
    out = set()
    for method, pattern, _ in _ROUTES:
        path = pattern.pattern.strip("^$")
        path = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", path)
        if path.startswith("/v1"):
            out.add((method, path))
    return out


def test_openapi_matches_routes() -> None:
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load((DOCS / "openapi.yaml").read_text())
    assert doc["openapi"].startswith("3.")
    documented = {
        (m.upper(), p)
        for p, item in doc["paths"].items()
        for m in item
        if m in ("get", "post", "delete", "put")
    }
    assert documented == served()


def test_api_md_mentions_every_route() -> None:
    text = (DOCS / "api.md").read_text()
    for method, path in served():
        shown = path.replace("{ref}", "{ref}")
        if "/networks/" in path:
            shown = path.replace("{ref}", "{name}")
        assert f"`{method} {shown}`" in text, (method, shown)
