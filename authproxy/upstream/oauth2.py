"""Plain OAuth2 upstream (GitHub and the like): explicit endpoints, identity from userinfo."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from zope.interface import implementer

from authproxy.config import Config, UpstreamConfig, UserinfoConfig, check_idp_url
from authproxy.storage.models import PendingAuthorization
from authproxy.upstream.codeflow import CodeFlowProvider, Identity
from authproxy.upstream.interface import IUpstreamProvider, UpstreamError
from authproxy.upstream.kind import UpstreamType, optional_urls, required_client_id, required_urls
from authproxy.upstream.sessions import TokenResponse


def field_value(document: Mapping[str, Any], field: str) -> Any:
    """``document[field]``, or for a dotted ``field`` absent as a key, the value at that path
    (``data.id``: ``document["data"]["id"]``); None when there is none."""
    if field in document or "." not in field:
        return document.get(field)
    value: Any = document
    for part in field.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def first_field(document: Mapping[str, Any], fields: Sequence[str]) -> str | None:
    """The first of ``fields`` (keys or dotted paths) present in ``document`` as a string
    (numbers become strings)."""
    for field in fields:
        value = field_value(document, field)
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int | float):
            # GitHub's numeric id: 1234 -> "1234" (never "1234.0")
            return str(int(value)) if float(value).is_integer() else str(value)
        if isinstance(value, str) and value:
            return value
    return None


def map_userinfo(document: Mapping[str, Any], userinfo: UserinfoConfig) -> Identity:
    """The identity described by a userinfo answer, per the configured field lists."""
    subject = first_field(document, userinfo.subject_fields)
    if subject is None:
        raise UpstreamError(
            "the userinfo answer has none of the subject fields "
            + ", ".join(userinfo.subject_fields)
        )
    name = first_field(document, userinfo.name_fields)
    email = first_field(document, userinfo.email_fields)
    claims: dict[str, object] = {"sub": subject}
    if name is not None:
        claims["name"] = name
    if email is not None:
        claims["email"] = email
    return Identity(subject=subject, name=name, email=email, claims=claims)


@implementer(IUpstreamProvider)
class OAuth2Provider(CodeFlowProvider):
    """An OAuth2 server with configured endpoints; the user is whoever userinfo names."""

    def _configure(self, upstream: UpstreamConfig) -> None:
        assert upstream.authorization_endpoint and upstream.token_endpoint and upstream.userinfo
        self._authorization_url = upstream.authorization_endpoint
        self._token_url = upstream.token_endpoint
        self._userinfo = upstream.userinfo

    def readiness(self) -> tuple[bool, str]:
        return True, "upstream endpoints are configured"

    def _authorization_endpoint(self) -> str:
        return self._authorization_url

    def _token_endpoint(self) -> str:
        return self._token_url

    async def _identify(self, tokens: TokenResponse, pending: PendingAuthorization) -> Identity:
        headers = {"Accept": "application/json", **self._userinfo.additional_headers}
        headers["Authorization"] = f"Bearer {tokens.access_token}"
        response = await self._http.request(
            self._userinfo.http_method.upper(),
            self._userinfo.endpoint_url,
            headers=headers,
            endpoint="userinfo",
        )
        if response.status != 200:
            self.log.warn(
                "Upstream {upstream} userinfo answered HTTP {status}",
                upstream=self.name,
                status=response.status,
            )
            raise UpstreamError(f"the userinfo endpoint answered HTTP {response.status}")
        try:
            return map_userinfo(response.body, self._userinfo)
        except UpstreamError as e:
            self.log.warn("Upstream {upstream} {reason}", upstream=self.name, reason=str(e))
            raise


def _config_problems(config: Config) -> list[str]:
    upstream = config.upstream
    problems = required_urls(upstream, "authorization_endpoint", "token_endpoint")
    if upstream.userinfo is None:
        problems.append('upstream.userinfo.endpoint_url: is required for type "oauth2"')
    elif (why := check_idp_url(upstream.userinfo.endpoint_url)) is not None:
        problems.append(f"upstream.userinfo.endpoint_url: {why}")
    return [
        *problems,
        *required_client_id(upstream),
        *optional_urls(upstream, "revocation_endpoint"),
    ]


#: ``[upstream] type = "oauth2"``: configured endpoints, and the user from userinfo.
OAUTH2 = UpstreamType(
    "oauth2",
    fields=(
        "authorization_endpoint",
        "token_endpoint",
        "userinfo",
        "revocation_endpoint",
        "authorize_params",
    ),
    config_problems=_config_problems,
    build=OAuth2Provider.build,
)
