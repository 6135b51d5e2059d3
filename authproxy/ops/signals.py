"""SIGHUP: re-read the key directories, reopen log files, log one line; never exit.

Without a handler SIGHUP's default action ends the process (Twisted's reactor handles only
SIGINT and SIGTERM), leaving no log line. With this one it means "look again": the key files
are read now instead of at the next inotify event or poll, and the log files twistd opened
for ``--logfile`` are reopened, which is what ``logrotate`` needs after it moved them
(``postrotate kill -HUP``). twistd itself only binds SIGUSR1, to ``LogFile.rotate``, which
renames the file it writes; after logrotate already moved that file it does nothing. Logs
written to stdout (``-n`` under systemd, the JSON observer) have nothing to reopen.

The handler only schedules the work on the reactor (``callFromThread``): a Python signal
handler runs between two bytecodes of whatever the reactor was doing.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.logger import Logger, LogPublisher, globalLogPublisher

from authproxy.keys.watcher import SecretWatcher

log = Logger()


def reopen_log_files(publisher: LogPublisher = globalLogPublisher) -> int:
    """Reopen every log file (``twisted.python.logfile.LogFile``) an observer writes to.

    twistd keeps no handle on the file it opened for ``--logfile`` other than its
    observer's output file, so that is where it is found. Returns how many were reopened.
    """
    reopened = 0
    for observer in list(getattr(publisher, "_observers", ())):
        out = getattr(observer, "_outFile", None)
        reopen = getattr(out, "reopen", None)
        if callable(reopen):
            reopen()
            reopened += 1
    return reopened


class HangupHandler(Service):
    """Binds SIGHUP while running (restoring the previous handler when stopped)."""

    def __init__(
        self,
        reactor: Any,
        watcher: SecretWatcher,
        reopen_logs: Callable[[], int] = reopen_log_files,
    ) -> None:
        self._reactor = reactor
        self._watcher = watcher
        self._reopen_logs = reopen_logs
        self._previous: Any = None

    def startService(self) -> None:
        super().startService()
        self._previous = signal.signal(signal.SIGHUP, self._received)

    def stopService(self) -> Any:
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None
        return super().stopService()

    def _received(self, signum: int, frame: Any) -> None:
        self._reactor.callFromThread(self.hangup)

    def hangup(self) -> None:
        """What SIGHUP does: key files re-read, log files reopened, one line logged."""
        try:
            keys = self._watcher.reload_now()
        except Exception as e:  # a failure here must not end the process
            keys = f"re-reading failed: {e.__class__.__name__}"
        try:
            reopened = self._reopen_logs()
        except OSError as e:
            reopened = 0
            log.error("SIGHUP: reopening log files failed: {error}", error=e)
        log.info(
            "SIGHUP: key files re-read ({keys}); {reopened} log files reopened",
            keys=keys,
            reopened=reopened,
        )
