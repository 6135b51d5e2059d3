"""SecretWatcher: reload the KeyRing when the mounted key directories change.

Kubernetes updates a mounted Secret by writing a new timestamped directory and atomically
renaming a ``..data`` symlink onto the old one; the visible ``key-0.pem`` is a symlink through
``..data``. Watching the files themselves misses that swap, so on Linux the *directories* are
watched with inotify. Without inotify (other systems, or when it cannot be set up) the files
are polled by content hash. A slow poll always runs as a safety net, also re-arming inotify
if a watched directory disappeared.

A change is debounced, then the whole set is loaded and validated before it is swapped in; a
bad set leaves the serving ring alone and its error stays visible in ``readiness_detail()``.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.filepath import FilePath

from authproxy.keys.ring import KeyFileError, KeyRing, KeySources, fingerprint, load_key_set

try:
    from twisted.internet import inotify as _inotify
except ImportError:  # pragma: no cover - non-Linux
    _inotify = None  # type: ignore[assignment]

# Every way a directory entry can appear, vanish, change or be swapped (the ..data rename).
WATCH_MASK = (
    (
        _inotify.IN_CREATE
        | _inotify.IN_MOVED_TO
        | _inotify.IN_DELETE
        | _inotify.IN_MODIFY
        | _inotify.IN_CLOSE_WRITE
        | _inotify.IN_ATTRIB
        | _inotify.IN_MOVED_FROM
        | _inotify.IN_DELETE_SELF
        | _inotify.IN_MOVE_SELF
    )
    if _inotify is not None
    else 0
)


@attrs.define(eq=False, slots=False)
class SecretWatcher(Service):
    """A Service that keeps ``ring`` in step with the key files named by ``sources``.

    ``clock`` schedules debouncing and polling. With ``use_inotify`` (the wiring's choice:
    the daemon sets it) ``clock`` must be a real reactor (IReactorFDSet) and the files are
    also watched with inotify; without it, as in tests driving a ``Clock``, they are polled.
    """

    _ring: KeyRing
    _sources: KeySources
    _clock: Any  # IReactorTime; also IReactorFDSet when inotify is to be used
    poll_interval: float = 10.0
    debounce: float = 0.5
    use_inotify: bool = False
    safety_poll_interval: float = 60.0

    last_error: str | None = attrs.field(default=None, init=False)
    #: When the key files were last read successfully (the clock's time; for /metrics).
    last_success_at: float | None = attrs.field(default=None, init=False)
    _last_fingerprint: str | None = attrs.field(default=None, init=False)
    _pending: Any = attrs.field(default=None, init=False)  # IDelayedCall
    _poller: LoopingCall | None = attrs.field(default=None, init=False)
    _notifier: Any = attrs.field(default=None, init=False)
    _unwatchable: set[str] = attrs.field(factory=set, init=False)
    # directory entries ignored as not regular files, already logged (by KeyRing.load at first)
    _reported_ignored: tuple[str, ...] = attrs.field(init=False)

    @_reported_ignored.default
    def _initially_reported(self) -> tuple[str, ...]:
        return self._ring.keyset.ignored

    _log = Logger()  # not annotated: a class-level descriptor, not an attrs field

    @property
    def watching(self) -> bool:
        """True while inotify watches are active (else only polling runs)."""
        return self._notifier is not None

    def _anything_configured(self) -> bool:
        return self._sources.signing_configured or self._sources.hmac_configured

    def startService(self) -> None:
        super().startService()
        self.last_success_at = self._clock.seconds()  # the ring was loaded before starting
        if not self._anything_configured():
            return  # purely ephemeral keys: nothing on disk to watch
        self._arm_inotify()
        try:
            # Catch anything that changed between the ring's first load and now.
            self._reload()
        except Exception:
            self._log.failure("Key reload failed unexpectedly")
        interval = self.safety_poll_interval if self.watching else self.poll_interval
        self._poller = LoopingCall(self._poll)
        self._poller.clock = self._clock
        self._poller.start(interval, now=False)

    def stopService(self) -> Any:
        if self._poller is not None and self._poller.running:
            self._poller.stop()
        self._poller = None
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        self._disarm_inotify()
        return super().stopService()

    def reload_now(self) -> str:
        """Read the key files now (SIGHUP) and say what the ring holds afterwards."""
        if self._anything_configured():
            self._ensure_inotify()
            self._reload()
        if self.last_error is not None:
            return f"kept the previous keys: {self.last_error}"
        return f"generation {self._ring.generation}, active kid {self._ring.active_signing_key.kid}"

    def readiness_detail(self) -> dict[str, str]:
        """``{"keys": "ok"}``, or the last reload error while the previous ring keeps serving."""
        if self.last_error is None:
            return {"keys": "ok"}
        return {"keys": f"reload failed, still serving the previous keys: {self.last_error}"}

    # inotify

    def _arm_inotify(self) -> None:
        if not self.use_inotify or _inotify is None:
            return
        if self._notifier is None:
            try:
                notifier = _inotify.INotify(reactor=self._clock)
            except Exception as e:
                self._log.warn(
                    "inotify unavailable ({error}); polling key files every {interval}s",
                    error=e,
                    interval=self.poll_interval,
                )
                self.use_inotify = False
                return
            notifier.startReading()
            self._notifier = notifier
        for directory in self._sources.watch_dirs():
            path = FilePath(directory)
            if self._notifier._isWatched(path):
                continue
            try:
                self._notifier.watch(path, mask=WATCH_MASK, callbacks=[self._on_event])
            except Exception as e:
                # Retried by the next poll; until then the poll covers the directory.
                if directory not in self._unwatchable:
                    self._log.warn(
                        "Cannot watch {directory} ({error}); will retry",
                        directory=directory,
                        error=e,
                    )
                self._unwatchable.add(directory)
            else:
                self._unwatchable.discard(directory)

    def _disarm_inotify(self) -> None:
        notifier, self._notifier = self._notifier, None
        if notifier is not None and notifier.connected:
            notifier.loseConnection()

    def _notifier_alive(self) -> bool:
        n = self._notifier
        return n is not None and bool(n.connected) and not n.disconnecting

    def _ensure_inotify(self) -> None:
        # Twisted's INotify closes itself when a watched directory is deleted: start afresh.
        if self.use_inotify and self._notifier is not None and not self._notifier_alive():
            self._notifier = None
        if self.use_inotify:
            self._arm_inotify()

    def _on_event(self, _ignored: object, path: FilePath[Any], mask: int) -> None:
        self._schedule_reload()

    # polling and reloading

    def _poll(self) -> None:
        # A periodic job logs its own failures so one bad tick cannot stop the loop.
        try:
            self._ensure_inotify()
            if fingerprint(self._sources) != self._last_fingerprint:
                self._schedule_reload()
        except Exception:
            self._log.failure("Key file poll failed")

    def _schedule_reload(self) -> None:
        if not self.running:
            return
        if self._pending is not None and self._pending.active():
            return  # the pending reload reads the files after this event anyway
        self._pending = self._clock.callLater(self.debounce, self._debounced_reload)

    def _debounced_reload(self) -> None:
        self._pending = None
        try:
            self._ensure_inotify()
            self._reload()
        except Exception:
            self._log.failure("Key reload failed unexpectedly")

    def _reload(self) -> None:
        # Digest first: a change during the load then shows up as a difference next time.
        digest = fingerprint(self._sources)
        if digest == self._last_fingerprint:
            return
        current = self._ring.keyset
        try:
            keyset = load_key_set(self._sources, previous=current)
        except KeyFileError as e:
            self._last_fingerprint = digest
            error, previous_error = str(e), self.last_error
            self.last_error = error
            if error != previous_error:
                self._log.error("Key reload failed, keeping the current keys: {error}", error=error)
            return
        self._last_fingerprint = digest
        self.last_success_at = self._clock.seconds()
        if self.last_error is not None:
            self._log.info("Key files are valid again")
            self.last_error = None
        for entry in keyset.ignored:
            if entry not in self._reported_ignored:
                self._log.error("Keys: {entry}", entry=entry)
        # Kept here, not read from the ring: a set with the same keys is not installed.
        self._reported_ignored = keyset.ignored
        if keyset.same_keys(current):
            return
        self._ring.replace(keyset)
        for warning in keyset.warnings:
            if warning in current.warnings:
                continue  # already reported when the previous set was loaded
            self._log.warn("Keys: {problem}", problem=warning)
        self._log.info(
            "Reloaded {signing} signing keys and {hmac} HMAC secrets "
            "(generation {generation}, active kid {kid})",
            signing=len(keyset.signing_keys),
            hmac=len(keyset.hmac_secrets),
            generation=self._ring.generation,
            kid=self._ring.active_signing_key.kid,
        )
