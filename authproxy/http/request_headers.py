"""Reading request headers by name, as text, without a 500 on bytes that are not UTF-8."""

from __future__ import annotations

from twisted.web.server import Request

from authproxy.http.errors import BadHeader


def header_text(request: Request, name: str) -> str | None:
    """The last value of request header ``name`` as text, or None when it is absent.

    Every header read by name goes through here: Twisted's ``getHeader("name")`` decodes
    UTF-8 strictly and raises on other bytes, which became a 500 with a traceback. This
    raises :class:`BadHeader` instead, an OAuthError that AsyncResource answers with 400.
    """
    values = request.requestHeaders.getRawHeaders(name.encode("ascii"))
    if not values:
        return None
    try:
        return values[-1].decode("utf-8")
    except UnicodeDecodeError:
        raise BadHeader(name) from None
