"""Each hook signature is written once: the facades mirror the hookspecs exactly."""

from __future__ import annotations

import inspect

import pytest

from nyx_core import DnsFacade, NetworkBackend, hookspecs

FACADES = [
    (NetworkBackend, "nyx_backend_", hookspecs.BACKEND_HOOKS),
    (DnsFacade, "nyx_dns_", hookspecs.DNS_HOOKS),
]
CASES = [(facade, hook, prefix) for facade, prefix, hooks in FACADES for hook in hooks]


def _base(annotation: object) -> str:
    """An annotation string without the ``| None`` a facade adds for a defaulted argument."""
    return str(annotation).removesuffix(" | None")


@pytest.mark.parametrize(("facade", "hook", "prefix"), CASES)
def test_facade_method_mirrors_its_hookspec(facade: type, hook: str, prefix: str) -> None:
    spec = inspect.signature(getattr(hookspecs, hook))
    method = getattr(facade, hook.removeprefix(prefix), None)
    assert method is not None, f"{facade.__name__} has no method for {hook}"
    params = list(inspect.signature(method).parameters.values())[1:]  # without self
    assert [p.name for p in params] == list(spec.parameters), hook
    for param in params:
        want = spec.parameters[param.name].annotation
        assert _base(param.annotation) == _base(want), (hook, param.name)
        assert param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD


@pytest.mark.parametrize(("facade", "prefix", "hooks"), FACADES)
def test_facade_has_no_method_without_a_hookspec(facade: type, prefix: str, hooks: tuple) -> None:
    public = {
        name
        for name, _ in inspect.getmembers(facade, inspect.isfunction)
        if not name.startswith("_")
    }
    extra = public - {h.removeprefix(prefix) for h in hooks} - {"load", "implements"}
    assert not extra, f"{facade.__name__} methods without a hookspec: {sorted(extra)}"


def test_required_and_optional_backend_hooks_partition_the_family() -> None:
    assert set(hookspecs.REQUIRED_BACKEND_HOOKS) | set(hookspecs.OPTIONAL_BACKEND_HOOKS) == set(
        hookspecs.BACKEND_HOOKS
    )
    assert not set(hookspecs.REQUIRED_BACKEND_HOOKS) & set(hookspecs.OPTIONAL_BACKEND_HOOKS)
