"""twistd plugin entry: ``twistd -n authproxy --config FILE`` (``--check``: check and exit).

``makeService`` validates the whole configuration before anything listens, then builds one
MultiService: a listening service per ``server.listen`` endpoint (all serving one Site),
and the services of the application (key watcher, storage sweeper, upstream discovery,
backend supervision).
"""

from __future__ import annotations

import gc
import sys
from typing import TYPE_CHECKING, Any, NoReturn

from twisted.application import service, strports
from twisted.internet.error import CannotListenError
from twisted.python import usage

from authproxy.config import Config, ConfigError, load_config
from authproxy.ops.logs import TwistdLogging
from authproxy.ops.shutdown import Drain, GracefulService

if TYPE_CHECKING:
    from authproxy.application import HostFacilities


class Options(usage.Options):
    synopsis = "--config FILE"
    longdesc = "Run the authproxy OAuth 2.1 authorization server and MCP reverse proxy."
    optParameters = [
        ["config", "c", None, "Path to the configuration file (TOML, or JSON for *.json)."],
    ]
    optFlags = [
        ["check", None, "Check the configuration (files included) and exit: 0 if usable, else 1."],
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
    """twistd's entry point. Without ``reactor`` (twistd never passes one) the process is
    authproxy's own: its garbage collector is tuned for it (``HeapTuning``),
    ``[logging]`` is handed to twistd's ``--logger`` factory (``logs.TWISTD``), and key files
    are watched with inotify and the IdP probed before logins (``DAEMON``). A caller that
    passes a reactor (a test, an embedding program) keeps its process as it is and gets
    neither inotify nor the probe."""
    if options.get("check"):
        from authproxy.ops.check import check_config

        raise SystemExit(check_config(options["config"]).write(sys.stdout, sys.stderr))
    own_process = reactor is None
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    try:
        config = load_config(options["config"], reactor=reactor)
    except ConfigError as e:
        _fail(e.problems)
        raise  # unreachable
    from authproxy.application import DAEMON
    from authproxy.ops import logs

    if not own_process:
        return build_service(config, reactor)
    top = build_service(config, reactor, logs.TWISTD, DAEMON)
    HeapTuning().setServiceParent(top)
    CleanExit(reactor).setServiceParent(top)
    return top


class CleanExit(service.Service):
    """Makes twistd exit 0 after a graceful shutdown on SIGTERM or SIGINT.

    twistd re-raises the signal that stopped the reactor when it exits, so the process
    would end "killed by SIGTERM" although it drained and stopped everything on purpose.
    Stopped after the drain (ops/shutdown.py), so a shutdown cut short keeps the signal.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def stopService(self) -> Any:
        self._reactor._exitSignal = None
        return super().stopService()


class HeapTuning(service.Service):
    """Tunes the garbage collector for a long-running daemon, once everything is built.

    Process-wide, so only the twistd path adds it (``makeService`` without a reactor).
    """

    def startService(self) -> None:
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


class _Top(GracefulService):
    def __init__(
        self, logging: TwistdLogging, logging_config: tuple[str, str], drain: Drain | None
    ) -> None:
        super().__init__(drain)
        self._logging = logging
        self._logging_config = logging_config

    def privilegedStartService(self) -> None:
        # twistd listens here, before any service starts (and before dropping privileges).
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            _cannot_listen(e)

    def startService(self) -> None:
        # twistd installs its log observer after makeService: only now can we tell.
        self._logging.warn_if_not_installed(*self._logging_config)
        try:
            super().startService()
        except CannotListenError as e:
            self.stopService()  # the services started before the listener (the backend)
            _cannot_listen(e)


def _cannot_listen(error: CannotListenError) -> NoReturn:
    """One line and exit 1 for a port that cannot be had (not twistd's traceback)."""
    reason = getattr(error.socketError, "strerror", None) or str(error.socketError)
    # twistd has pointed sys.stderr at its log by now; the operator is at the terminal.
    stream = sys.__stderr__ or sys.stderr
    stream.write(
        f"authproxy: cannot listen on {error.interface or '0.0.0.0'}:{error.port}: "
        f"{reason[:1].lower()}{reason[1:]}\n"
    )
    stream.flush()
    raise SystemExit(1)


def build_service(
    config: Config,
    reactor: Any,
    logging: TwistdLogging | None = None,
    facilities: HostFacilities | None = None,
) -> service.MultiService:
    """The whole daemon for a validated ``config``.

    ``logging`` receives ``[logging]`` for twistd's ``--logger`` factory; without it a
    private one does (nothing outside the returned service changes). ``facilities`` says
    whether inotify and the IdP probe are used (default: neither).
    """
    from authproxy.application import HostFacilities, build_application

    logging = logging or TwistdLogging()
    logging.configure(config.logging.format, config.logging.level)
    try:
        app = build_application(config, reactor, facilities or HostFacilities())
    except ConfigError as e:
        _fail(e.problems)
        raise
    if app.site.access_log is not None:
        app.site.access_log.out = logging.access_stream
    top = _Top(logging, (config.logging.format, config.logging.level), app.drain)
    for child in app.services:
        child.setServiceParent(top)
    for child in app.last_services:
        child.setServiceParent(top)
        top.last.append(child)
    for description in config.server.listen:
        listener = strports.service(description, app.site, reactor=reactor)
        listener.setServiceParent(top)
        top.listeners.append(listener)
    metrics_listen = config.server.metrics_listen
    if metrics_listen is not None and app.metrics_site is not None:
        # Not among ``top.listeners``: scrapes go on while a shutdown drains the others.
        strports.service(metrics_listen, app.metrics_site, reactor=reactor).setServiceParent(top)
    return top
