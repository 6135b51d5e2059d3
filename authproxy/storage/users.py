"""IUsers: the stable internal user id of each upstream identity."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from zope.interface import Interface


class IUsers(Interface):
    """Upstream identity (upstream name, subject) to user id."""

    def user_id_for(upstream_name: str, upstream_subject: str) -> Deferred[str]:
        """The stable internal user id for an upstream identity, created on first sight."""
