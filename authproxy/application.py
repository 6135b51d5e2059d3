"""Wiring: build every part of authproxy from a validated Config.

The one place that knows all the parts. Each part gets its collaborators passed in
(reactor, key ring, storage, upstream provider), so tests can build any subset.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.application.service import IService
from twisted.web.server import Site

from authproxy.config import Config
from authproxy.logs import access_log_line
from authproxy.web import HealthResource, PrefixTable, Readiness, ReadyResource


@attrs.define
class Application:
    config: Config
    reactor: Any
    root: PrefixTable
    site: Site
    readiness: Readiness
    services: list[IService] = attrs.field(factory=list)


def build_application(config: Config, reactor: Any) -> Application:
    readiness = Readiness()
    root = PrefixTable()
    root.mount("/health", HealthResource())
    root.mount("/ready", ReadyResource(readiness))
    site = Site(root, reactor=reactor, logFormatter=access_log_line)
    site.displayTracebacks = False
    return Application(config=config, reactor=reactor, root=root, site=site, readiness=readiness)
