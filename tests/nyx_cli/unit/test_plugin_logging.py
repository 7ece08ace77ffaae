"""nyxd turns on the log records of the plugins it loaded, whoever wrote them."""

from __future__ import annotations

import io
import json

from loguru import logger

from nyx_cli.daemon._logging import configure_logging, enable_plugin_logging
from nyx_core import DnsFacade, NetworkBackend


def _log_as(module: str, message: str) -> None:
    """Log ``message`` from code whose module is ``module`` (loguru filters on it)."""
    code = compile(f"logger.info({message!r})", f"<{module}>", "exec")
    exec(code, {"__name__": module, "logger": logger})


def test_loaded_plugins_log_and_others_stay_silent() -> None:
    out = io.StringIO()
    configure_logging("debug", out)
    try:
        backend = NetworkBackend.load("loopback")  # a third party's driver
        dns = DnsFacade.load("hosts")  # a third party's DNS provider
        logger.disable("nyx_driver_loopback")
        logger.disable("nyx_dns_hosts")
        logger.disable("nyx_plugins_cni")  # installed, not loaded: must stay silent
        assert enable_plugin_logging(backend.pm) == ["nyx_driver_loopback"]
        assert enable_plugin_logging(dns.pm) == ["nyx_dns_hosts"]
        _log_as("nyx_driver_loopback.x", "from the driver")
        _log_as("nyx_dns_hosts.y", "from the provider")
        _log_as("nyx_plugins_cni.z", "not loaded")
        msgs = [json.loads(line)["msg"] for line in out.getvalue().splitlines()]
        assert "from the driver" in msgs and "from the provider" in msgs
        assert "not loaded" not in msgs
    finally:
        logger.remove()
        logger.add(io.StringIO())
