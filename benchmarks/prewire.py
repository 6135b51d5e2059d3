"""Run authproxy with the auth routes and the proxy mounted, for ``harness.py --prewire``.

A stop-gap for debugging the harness while ``authproxy/application.py`` does not mount every
part yet: it builds the application exactly as the daemon does, then mounts whatever is
missing (auth routes, the guarded proxy) from the parts' own public builders. The measured
runs use the real daemon (``twistd -n authproxy``); this is never used for published figures.

Usage: ``python benchmarks/prewire.py --config FILE``.
"""

from __future__ import annotations

import argparse

from twisted.application import service, strports
from twisted.internet import reactor
from twisted.logger import globalLogBeginner
from twisted.web.server import Site

from authproxy import logs
from authproxy.application import build_application
from authproxy.authserver.routes import auth_routes
from authproxy.config import load_config
from authproxy.logs import access_log_line
from authproxy.proxy import make_proxy_resource, make_request_factory, proxy_routes
from authproxy.upstream import make_upstream_provider, upstream_services
from authproxy.web import JSONNotFound


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    options = parser.parse_args()
    config = load_config(options.config, reactor=reactor)
    logs.configure(config.logging.format, config.logging.level)
    globalLogBeginner.beginLoggingTo([logs.observer()])
    app = build_application(config, reactor)
    services = list(app.services)
    site = app.site
    provider = getattr(app, "provider", None)
    if "/oauth/token" not in {k.decode() for k in app.root.exact}:
        provider = make_upstream_provider(config, app.storage, reactor)
        services += upstream_services(provider)
        app.root.mount_all(auth_routes(config, app.ring, app.storage, provider, reactor))
    if isinstance(app.root.fallback, JSONNotFound):
        app.root.mount_all(proxy_routes(config))
        app.root.fallback = make_proxy_resource(config, app.ring, app.storage, provider, reactor)
        site = Site(app.root, reactor=reactor, logFormatter=access_log_line)
        site.displayTracebacks = False
        site.requestFactory = make_request_factory(config.server.max_request_body)
    top = service.MultiService()
    for child in services:
        child.setServiceParent(top)
    for description in config.server.listen:
        strports.service(description, site, reactor=reactor).setServiceParent(top)
    top.startService()
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
