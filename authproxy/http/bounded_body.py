"""Reading an outgoing request's response body up to a size cap, enforced while reading."""

from __future__ import annotations

import treq
from twisted.internet.protocol import Protocol
from twisted.web.iweb import IResponse


class _TooLarge(Exception):
    pass


async def read_bounded(response: IResponse, limit: int) -> bytes | None:
    """The whole body, or None (the rest discarded) once it exceeds ``limit`` bytes: by its
    Content-Length, or while reading a body that declared none."""
    if isinstance(response.length, int) and response.length > limit:
        response.deliverBody(Protocol())
        return None
    chunks: list[bytes] = []
    size = 0

    def collect(data: bytes) -> None:
        nonlocal size
        size += len(data)
        if size > limit:
            raise _TooLarge()
        chunks.append(data)

    try:
        await treq.collect(response, collect)
    except _TooLarge:
        return None
    return b"".join(chunks)
