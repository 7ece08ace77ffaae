"""Log configuration for nyxd: one flat JSON object per line on stderr.

Libraries never call ``logger.add()``; nyxd calls :func:`configure_logging` once, before it
imports any plugin.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from loguru import logger

__all__ = ["configure_logging"]


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
    for name in (
        "nyx_core",
        "nyx_plugins_native",
        "nyx_plugins_cni",
        "nyx_dns_embedded",
        "nyx_cli",
    ):
        logger.enable(name)
