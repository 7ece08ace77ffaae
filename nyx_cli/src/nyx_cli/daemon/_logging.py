"""Log configuration for nyxd: one flat JSON object per line on stderr.

Libraries never call ``logger.add()``; nyxd calls :func:`configure_logging` once, before it
imports any plugin.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from loguru import logger

__all__ = ["configure_logging", "enable_plugin_logging"]


def _json_sink(stream: TextIO) -> Any:
    def sink(message: Any) -> None:
        record = message.record
        obj: dict[str, Any] = {
            "time": record["time"].isoformat(timespec="milliseconds"),
            "level": record["level"].name.lower(),
            "msg": record["message"],
        }
        for key, value in record["extra"].items():
            obj.setdefault(key, value)
        if record["exception"] is not None and record["exception"].value is not None:
            obj["error"] = repr(record["exception"].value)
        stream.write(json.dumps(obj, default=str) + "\n")
        stream.flush()

    return sink


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """Send every nyx log record to ``stream`` (stderr) as one JSON object per line."""
    logger.remove()
    logger.add(
        _json_sink(stream or sys.stderr), level=level.upper(), diagnose=False, backtrace=False
    )
    for name in ("nyx_core", "nyx_cli"):
        logger.enable(name)


def enable_plugin_logging(pm: Any) -> list[str]:
    """Enable the log records of every plugin registered in ``pm`` (their top package).

    Plugins call ``logger.disable(__name__)`` as libraries do; nyxd turns on exactly the
    ones it loaded, first-party or not. Returns the package names enabled.
    """
    names: list[str] = []
    for plugin in pm.get_plugins():
        module = (
            plugin.__name__
            if hasattr(plugin, "__path__") or isinstance(plugin, type(sys))
            else type(plugin).__module__
        )
        top = str(module).split(".")[0]
        if top and top not in names:
            names.append(top)
            logger.enable(top)
    return names
