"""Environment files: compose's ``.env`` and ``env_file``, ``nyx run --env-file``.

One parser, two dialects: ``quotes=True`` is the dotenv format Compose reads (``export``
prefix, a value in matching quotes loses them, ``#`` comments), ``quotes=False`` is
``docker run --env-file`` (the value is taken literally). A line ``NAME`` without ``=``
takes ``NAME``'s value from ``environ`` (and is skipped when it has none).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # nothing imported at run time: ``nyx run`` uses this
    from collections.abc import Mapping

__all__ = ["parse_env_file"]


def parse_env_file(
    text: str, source: str, *, quotes: bool = True, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``NAME=value`` lines of ``text`` as a dict (later lines win).

    :raises ValueError: naming ``source`` and the line, for a line with no name or a name
        with a space in it.
    """
    env: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip() if quotes else raw.lstrip()
        if not line or line.startswith("#"):
            continue
        if quotes and line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip() if quotes else key
        if not key or any(c.isspace() for c in key):
            raise ValueError(f"{source}:{number}: {raw!r} is not NAME=VALUE")
        if not sep:
            if environ is not None and key in environ:
                env[key] = environ[key]
            continue
        if quotes:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            elif " #" in value:
                value = value.split(" #", 1)[0].rstrip()
        env[key] = value
    return env
