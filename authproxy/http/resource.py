"""``AsyncResource``: the base of the Resources whose handlers are coroutines.

It follows Synapse's shape: ``render`` starts a coroutine and returns NOT_DONE_YET; an
exception ends in one place, the error mapper (http/errors.py), so a bad request can never
kill the daemon or leave a connection hanging.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from authproxy.http.errors import (
    HTTPError,
    internal_error,
    method_not_allowed,
    render_error,
    storage_unavailable,
    write_error,
)
from authproxy.storage.unavailable import StorageUnavailable

log = Logger()


class AsyncResource(Resource):
    """A leaf Resource whose handlers are coroutines ``async def handle_GET(request) -> bytes | None``.

    Returning bytes writes them and finishes; returning None means the handler finished the
    request itself (or is streaming). An ``HTTPError`` becomes its response; anything else
    is logged and answered 500 without details. ``StorageUnavailable`` is answered 503
    with ``Retry-After``: a page where ``for_browsers``, else OAuth JSON.
    """

    isLeaf = True
    #: Whether people reach this endpoint in a browser (errors as pages, not JSON).
    for_browsers = False

    def render(self, request: Request) -> Any:
        method = request.method.decode("ascii", "replace")
        handler: Callable[[Request], Coroutine[Any, Any, bytes | None]] | None = getattr(
            self, f"handle_{method}", None
        )
        if method == "HEAD" and handler is None:
            handler = getattr(self, "handle_GET", None)
        if handler is None:
            allowed = sorted(
                name[len("handle_") :] for name in dir(self) if name.startswith("handle_")
            )
            return render_error(request, method_not_allowed(allowed, f"{method} is not allowed"))
        d: Deferred[bytes | None] = ensureDeferred(handler(request))
        d.addCallbacks(self._finish, self._fail, callbackArgs=(request,), errbackArgs=(request,))
        return NOT_DONE_YET

    def _finish(self, body: bytes | None, request: Request) -> None:
        if body is None or request.finished or getattr(request, "_disconnected", False):
            return
        request.write(body)
        request.finish()

    def _fail(self, failure: Failure, request: Request) -> None:
        err = failure.value
        if isinstance(err, StorageUnavailable):
            log.warn("{path}: storage unavailable ({why})", path=request.path, why=err)
            err = storage_unavailable(err.retry_after, self.for_browsers)
        elif not isinstance(err, HTTPError):
            log.failure("Unhandled error rendering {path}", failure, path=request.path)
            err = internal_error()
        write_error(request, err)
