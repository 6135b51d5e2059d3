"""twistd plugin entry: ``twistd -n authproxy --config FILE``.

``makeService`` validates the whole configuration before anything listens, then builds one
MultiService: a listening service per ``server.listen`` endpoint (all serving one Site),
and the services of the application (key watcher, storage sweeper, upstream discovery,
backend supervision).
"""

from __future__ import annotations

import gc
import sys
from typing import Any

from twisted.application import service, strports
from twisted.python import usage

from authproxy.config import Config, ConfigError, load_config


class Options(usage.Options):
    synopsis = "--config FILE"
    longdesc = "Run the authproxy OAuth 2.1 authorization server and MCP reverse proxy."
    optParameters = [
        ["config", "c", None, "Path to the configuration file (TOML, or JSON for *.json)."],
    ]

    def postOptions(self) -> None:
        if not self["config"]:
            raise usage.UsageError("--config FILE is required")


def _fail(problems: list[str]) -> None:
    """Report configuration problems, one line each, and exit 1 (no traceback)."""
    sys.stderr.write("authproxy: configuration error\n")
    for line in problems:
        sys.stderr.write(f"  {line}\n")
    sys.stderr.flush()
    raise SystemExit(1)


def makeService(options: Options | dict[str, Any], reactor: Any = None) -> service.MultiService:
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    try:
        config = load_config(options["config"], reactor=reactor)
    except ConfigError as e:
        _fail(e.problems)
        raise  # unreachable
    return build_service(config, reactor)


class _Top(service.MultiService):
    logging_config = ("text", "info")

    def startService(self) -> None:
        from authproxy.ops import logs

        # twistd installs its log observer after makeService: only now can we tell.
        logs.warn_if_not_installed(*self.logging_config)
        super().startService()
        # Everything built so far lives as long as the process. Freezing it keeps the
        # garbage collector's full passes (pauses that show up as request latency) from
        # walking it again and again.
        gc.collect()
        gc.freeze()
        # Each request allocates a few hundred short-lived objects that reference counting
        # frees; the default young-generation threshold (700) would still run a collection
        # every couple of requests.
        gc.set_threshold(20_000, 20, 20)


def build_service(config: Config, reactor: Any) -> service.MultiService:
    """The whole daemon for a validated ``config``."""
    from authproxy.application import build_application
    from authproxy.ops import logs

    logs.configure(config.logging.format, config.logging.level)
    try:
        app = build_application(config, reactor)
    except ConfigError as e:
        _fail(e.problems)
        raise
    top = _Top()
    top.logging_config = (config.logging.format, config.logging.level)
    for child in app.services:
        child.setServiceParent(top)
    for description in config.server.listen:
        strports.service(description, app.site, reactor=reactor).setServiceParent(top)
    return top
