"""StorageUnavailable: what a networked storage raises when its server cannot answer now."""

from __future__ import annotations


class StorageUnavailable(Exception):
    """The storage server is unreachable or did not answer in time.

    Every endpoint that needs storage answers it with 503 and ``Retry-After``
    (``retry_after`` seconds) through the one error path (http/resource.py). The message
    names what went wrong in words fit for a log line: never an address's credentials.
    """

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after
