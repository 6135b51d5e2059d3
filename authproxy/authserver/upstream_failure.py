"""What a person sees when the upstream identity provider fails during sign-in."""

from __future__ import annotations

from authproxy.http.errors import HTMLPageError
from authproxy.upstream.interface import UpstreamError, UpstreamUnavailable


def upstream_error_page(error: UpstreamError) -> HTMLPageError:
    """The page shown when the upstream IdP failed; transient failures suggest a retry time."""
    if isinstance(error, UpstreamUnavailable):
        return HTMLPageError(
            502,
            "Sign-in is temporarily unavailable",
            "The identity provider could not be reached.",
            "Wait a moment, then go back to your application and sign in again.",
            headers={"Retry-After": str(error.retry_after)},
        )
    return HTMLPageError(
        502,
        "Sign-in failed",
        f"The identity provider's answer could not be used: {error}",
        "Go back to your application and sign in again. If this keeps happening, "
        "contact the administrator of this server.",
    )
