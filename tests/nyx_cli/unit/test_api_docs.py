"""docs/openapi.yaml and docs/api.md describe every route the API serves, and nothing else."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from nyx_cli.daemon._api import _ROUTES
from nyx_cli.daemon._api_openapi import openapi

DOCS = Path(__file__).resolve().parents[3] / "docs"


def served() -> set[tuple[str, str]]:
    out = set()
    for method, pattern, _ in _ROUTES:
        path = pattern.pattern.strip("^$")
        path = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", path)
        if path.startswith("/v1"):
            out.add((method, path))
    return out


def documented_in_api_md(text: str) -> set[tuple[str, str]]:
    """Every `METHOD /v1/...` span of api.md."""
    return set(re.findall(r"`(GET|POST|PUT|DELETE|PATCH) (/v1[^`?\s]*)`", text))


def test_openapi_yaml_is_generated_from_the_code() -> None:
    yaml = pytest.importorskip("yaml")
    committed = yaml.safe_load((DOCS / "openapi.yaml").read_text())
    assert committed == json.loads(json.dumps(openapi())), (
        "docs/openapi.yaml is stale: python -m nyx_cli.daemon._api_openapi docs/openapi.yaml"
    )


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


def test_api_md_lists_exactly_the_served_routes() -> None:
    assert documented_in_api_md((DOCS / "api.md").read_text()) == served()


def test_the_api_md_check_can_fail() -> None:
    text = (DOCS / "api.md").read_text()
    assert "`DELETE /v1/networks/{name}`" in text
    without = text.replace("`DELETE /v1/networks/{name}`", "`DELETE /v1/networks`")
    assert documented_in_api_md(without) != served()
    extra = text + "\n`GET /v1/nothing`\n"
    assert documented_in_api_md(extra) != served()
