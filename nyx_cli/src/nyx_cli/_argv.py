"""Accept the spec's Go-style single-dash long flags (``-net-driver=cni``, ``-dns off``)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # nothing imported at run time: ``nyx`` uses this on every call
    from collections.abc import Iterable, Sequence

__all__ = ["normalize_argv"]


def normalize_argv(argv: Sequence[str], long_names: Iterable[str]) -> list[str]:
    """Rewrite ``-name`` / ``-name=value`` into ``--name`` for every known long option.

    Arguments after ``--`` are left alone, as are short options and unknown words.
    """
    names = set(long_names)
    out: list[str] = []
    rest = False
    for arg in argv:
        if rest or arg == "--":
            rest = True
            out.append(arg)
            continue
        if arg.startswith("-") and not arg.startswith("--") and len(arg) > 2:
            name = arg[1:].split("=", 1)[0]
            if name in names:
                out.append("-" + arg)
                continue
        out.append(arg)
    return out
