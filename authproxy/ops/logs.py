"""Log observers for twistd: human text or one JSON object per line, filtered by level.

Events are data (``log.info("Reloaded {count} keys", count=n)``); the JSON format keeps
the fields, so operators can query them. Fields whose names look secret are never written.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import IO, Any, cast

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    textFileLogObserver,
)
from zope.interface import implementer

_LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "warning": LogLevel.warn,
    "error": LogLevel.error,
    "critical": LogLevel.critical,
}
_SECRET_WORDS = ("token", "secret", "password", "code", "authorization", "cookie")


def _json_safe(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return repr(value)


def json_event(event: dict[str, Any]) -> str:
    """One JSON line: timestamp, level, namespace, message, then the event's own fields."""
    record: dict[str, Any] = {
        "timestamp": datetime.fromtimestamp(event.get("log_time", 0), UTC).isoformat(),
        "level": event["log_level"].name if "log_level" in event else "info",
        "namespace": event.get("log_namespace", ""),
        "message": formatEvent(event),
    }
    for key, value in event.items():
        if key.startswith("log_") or key in record or key in ("format", "message", "isError"):
            continue
        if any(word in key.lower() for word in _SECRET_WORDS):
            continue
        record[key] = _json_safe(value)
    failure = event.get("log_failure")
    if failure is not None:
        record["failure"] = failure.getTraceback()
    return json.dumps(record, separators=(",", ":"))


def json_line_observer(out: IO[str]) -> ILogObserver:
    @implementer(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        out.write(json_event(event) + "\n")
        out.flush()

    return cast(ILogObserver, observe)


def make_observer(fmt: str, level: str, out: IO[str] | None = None) -> ILogObserver:
    """The observer for ``[logging]``: format ``text`` or ``json``, events below ``level`` dropped."""
    out = out or sys.stdout
    base = json_line_observer(out) if fmt == "json" else textFileLogObserver(out)
    predicate = LogLevelFilterPredicate(defaultLogLevel=_LEVELS.get(level.lower(), LogLevel.info))
    return FilteringLogObserver(base, [predicate])


class TwistdLogging:
    """What ``makeService`` tells twistd's ``--logger`` factory about ``[logging]``.

    makeService runs before twistd starts logging, and twistd builds the observer by
    calling a factory it imported by name, with no arguments: the two meet here. The
    daemon uses the one instance ``TWISTD`` (behind ``observer``); tests and embedding
    programs build their own, so wiring a service never changes module state.
    """

    def __init__(self) -> None:
        self.format = "text"
        self.level = "info"
        self.installed = False
        #: the stream the observer writes to (None until twistd builds it)
        self.stream: IO[str] | None = None

    def configure(self, fmt: str, level: str) -> None:
        """Record ``[logging]`` for the observer twistd builds later."""
        self.format, self.level = fmt, level

    def observer(self) -> ILogObserver:
        """The configured observer, writing to stdout."""
        self.installed = True
        self.stream = sys.stdout
        return make_observer(self.format, self.level, self.stream)

    def access_stream(self) -> IO[str]:
        """Where access lines go (ops/access_log.py): beside the observer's own lines.

        Not ``sys.stdout`` as it is when they are written: twistd replaces it, after building
        the observer, with a file that turns every line written into a log event, which
        costs what the access log avoids and prefixes a second timestamp to every line.
        Without this module's observer (twistd's own), that is where the lines go.
        """
        return self.stream if self.stream is not None else sys.stdout

    def warn_if_not_installed(self, fmt: str, level: str) -> None:
        """Say so when ``[logging]`` asks for something twistd's default observer ignores."""
        if not self.installed and (fmt != "text" or level.lower() != "info"):
            Logger().warn(
                "[logging] format={fmt} level={lvl} needs "
                "`twistd --logger authproxy.ops.logs.observer`; logging as twistd's default text",
                fmt=fmt,
                lvl=level,
            )


#: The daemon's handoff (see TwistdLogging); only twistd's path through makeService uses it.
TWISTD = TwistdLogging()


def observer() -> ILogObserver:
    """The factory for ``twistd --logger authproxy.ops.logs.observer``: writes to stdout."""
    return TWISTD.observer()
