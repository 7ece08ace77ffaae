"""The kit's own tests: install the test-only drivers and DNS providers of this directory
as real entry points (a dist-info on ``sys.path``), so the conformance suites load them by
name exactly as they load any installed plugin. Only while a test module of this directory
runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def _entry_points() -> str:
    import kit_bridge
    import kit_dns

    lines = ["[nyx.net_drivers]"]
    lines += [f"{name} = kit_bridge:{cls.__name__}" for name, cls in kit_bridge.VARIANTS.items()]
    lines += ["[nyx.dns_providers]"]
    lines += [f"{name} = kit_dns:{cls.__name__}" for name, cls in kit_dns.VARIANTS.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture(autouse=True, scope="module")
def kit_plugins_installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A ``nyx-kit-plugins`` distribution whose entry points are this directory's drivers."""
    site = tmp_path_factory.mktemp("kit-site")
    info = site / "nyx_kit_plugins-0.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: nyx-kit-plugins\nVersion: 0.0.0\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(HERE))
        (info / "entry_points.txt").write_text(_entry_points())
        mp.syspath_prepend(str(site))
        yield site
