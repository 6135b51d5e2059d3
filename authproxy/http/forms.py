"""Reading ``application/x-www-form-urlencoded`` bodies, once, for every endpoint that takes them.

A ``FormReader`` is parameterised by its size limit and by how it refuses (``FormRefusals``):
the token and revocation endpoints answer OAuth JSON errors (``OAUTH_REFUSALS``), the
consent and development login pages answer with a sentence on a page (``PageRefusals``). Every parameter may appear once (RFC 6749 §3.1), the body
must be UTF-8, and nothing larger than the limit is read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol
from urllib.parse import parse_qsl

import attrs
from twisted.web.server import Request

from authproxy.http.errors import BadHeader, OAuthError
from authproxy.http.request_headers import header_text

FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"


class FormRefusals(Protocol):
    """The exception a reader raises for each way a form can be unacceptable."""

    def bad_header(self, error: BadHeader) -> Exception: ...
    def not_a_form(self) -> Exception: ...
    def in_query(self) -> Exception: ...
    def too_large(self, limit: int) -> Exception: ...
    def undecodable(self) -> Exception: ...
    def repeated(self, name: str) -> Exception: ...


class OAuthRefusals:
    """Form refusals as RFC 6749 §5.2 JSON errors."""

    def bad_header(self, error: BadHeader) -> Exception:
        return error

    def not_a_form(self) -> Exception:
        return OAuthError("invalid_request", f"the body must be {FORM_MEDIA_TYPE}")

    def in_query(self) -> Exception:
        return OAuthError("invalid_request", "parameters are accepted in the body only")

    def too_large(self, limit: int) -> Exception:
        return OAuthError("invalid_request", f"the request body exceeds {limit} bytes", status=413)

    def undecodable(self) -> Exception:
        return OAuthError("invalid_request", "the body is not UTF-8")

    def repeated(self, name: str) -> Exception:
        if name == "resource":
            return OAuthError("invalid_target", "at most one resource may be requested")
        return OAuthError("invalid_request", f"parameter {name} is repeated")


OAUTH_REFUSALS = OAuthRefusals()


@attrs.frozen
class PageRefusals:
    """Form refusals for a page a person submitted: one sentence each, naming ``form``.

    ``refuse`` makes the exception from the sentence (an error page, or the form again).
    """

    form: str  # what the person filled in: "approval form", "login form"
    refuse: Callable[[str], Exception]

    def bad_header(self, error: BadHeader) -> Exception:
        return self.refuse(f"The {self.form}'s Content-Type header is not valid UTF-8.")

    def not_a_form(self) -> Exception:
        return self.refuse(f"The {self.form} was not sent as form data.")

    def in_query(self) -> Exception:
        return self.refuse(f"The {self.form} arrived incomplete.")

    def too_large(self, limit: int) -> Exception:
        return self.refuse(f"The {self.form} was too large.")

    def undecodable(self) -> Exception:
        return self.refuse(f"The {self.form} could not be decoded.")

    def repeated(self, name: str) -> Exception:
        return self.refuse(f"The {self.form} repeated the field {name}.")


def media_type(request: Request) -> str:
    """The request's media type, lower-cased, without parameters ("" when absent)."""
    raw = header_text(request, "Content-Type") or ""
    return raw.split(";", 1)[0].strip().lower()


def read_body(request: Request, limit: int, too_large: Callable[[int], Exception]) -> bytes:
    """The request body; raises ``too_large(limit)`` when it exceeds ``limit`` bytes."""
    content = request.content
    if content is None:
        return b""
    content.seek(0)
    body = content.read(limit + 1)
    if len(body) > limit:
        raise too_large(limit)
    return bytes(body)


def single_valued(
    pairs: Iterable[tuple[str, str]], repeated: Callable[[str], Exception]
) -> dict[str, str]:
    """Parameters as a dict; raises ``repeated(name)`` when one appears twice."""
    values: dict[str, str] = {}
    for name, value in pairs:
        if name in values:
            raise repeated(name)
        values[name] = value
    return values


@attrs.frozen
class FormReader:
    """Reads a form body of at most ``limit`` bytes, refusing through ``refusals``.

    ``body_only``: refuse a request whose URL has a query (OAuth endpoints: parameters in
    URLs end up in logs, so secrets are accepted in the body only).
    """

    limit: int
    refusals: FormRefusals
    body_only: bool = False

    def read(self, request: Request) -> dict[str, str]:
        """The form's fields (each present once)."""
        refusals = self.refusals
        try:
            media = media_type(request)
        except BadHeader as e:
            raise refusals.bad_header(e) from None
        if media != FORM_MEDIA_TYPE:
            raise refusals.not_a_form()
        if self.body_only and request.uri and b"?" in request.uri:
            raise refusals.in_query()
        body = read_body(request, self.limit, refusals.too_large)
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        except (UnicodeDecodeError, ValueError):
            raise refusals.undecodable() from None
        return single_valued(pairs, refusals.repeated)


# The token and revocation endpoints' form bodies are tiny; refuse anything larger early.
OAUTH_FORM = FormReader(64 * 1024, OAUTH_REFUSALS, body_only=True)


def query_pairs(request: Request) -> list[tuple[str, str]]:
    """The query string's parameters in order (bytes decoded as UTF-8, bad bytes replaced)."""
    query = request.uri.partition(b"?")[2].decode("utf-8", "replace")
    return parse_qsl(query, keep_blank_values=True)
