"""Ending a token family: what both refresh-token reuse and revocation do."""

from __future__ import annotations

from twisted.logger import Logger

from authproxy.storage.families import ITokenFamilies
from authproxy.upstream.interface import IUpstreamProvider

_log = Logger()


async def end_token_family(
    families: ITokenFamilies, provider: IUpstreamProvider, family_id: str | None, tsid: str
) -> None:
    """Revoke a token family (its access tokens go on the deny list) and its upstream session.

    A family and its upstream token session belong to exactly one login, so once the family
    is revoked nothing may use the session again.
    """
    if family_id is not None:
        await families.revoke_family(family_id)
    try:
        await provider.end_session(tsid)
    except Exception:
        _log.failure("Ending upstream session {tsid} failed", tsid=tsid)
