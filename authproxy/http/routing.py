"""The root Resource: a prefix table mounting the auth routes, health, metrics and the proxy.

This is the RFC's PrefixHandlers idea: each capability registers the paths it serves, and
the table picks a handler by exact path first, then by the longest matching prefix. The
proxy (with its bearer guard) is the fallback for everything else, so the authorization
server is never behind the guard and the proxy knows nothing of the authorization server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

import attrs
from twisted.internet.address import UNIXAddress
from twisted.web.error import UnsupportedMethod
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from authproxy.http.errors import JSONError, not_found, render_error
from authproxy.http.errors import method_not_allowed as method_not_allowed_error
from authproxy.http.hosts import ServedHosts, framing_error, misdirected
from authproxy.http.loopback import is_loopback_host
from authproxy.http.responses import json_body

#: host_refusal's verdict not yet reached for a request (None means: serve it)
_UNJUDGED = object()


class JSONNotFound(Resource):
    """A JSON 404 for paths nobody mounted."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        return render_error(request, not_found())


@attrs.define
class PrefixTable(Resource):
    """Dispatch whole request paths: exact routes beside prefix routes, longest prefix wins.

    A prefix ``/oauth/`` matches ``/oauth/x``; an exact route matches only itself. The
    matched Resource is rendered as a leaf: it sees the full ``request.path``.
    """

    exact: dict[bytes, IResource] = attrs.field(factory=dict)
    prefixes: list[tuple[bytes, IResource]] = attrs.field(factory=list)
    # route labels for the metrics, made once per route rather than once per request
    _labels: dict[tuple[bytes, bool], str] = attrs.field(factory=dict, init=False)
    fallback: IResource = attrs.field(factory=JSONNotFound)
    #: the Host check (http/hosts.py); None answers every host
    hosts: ServedHosts | None = None
    #: paths served whatever the Host: probes address the pod by its IP
    any_host_paths: frozenset[bytes] = frozenset()

    def __attrs_post_init__(self) -> None:
        Resource.__init__(self)

    def mount(self, path: str, resource: IResource, *, prefix: bool = False) -> None:
        key = path.encode("utf-8")
        self._labels[key, prefix] = path + "*" if prefix else path
        if prefix:
            self.prefixes.append((key, resource))
            self.prefixes.sort(key=lambda item: len(item[0]), reverse=True)
        else:
            self.exact[key] = resource

    def mount_all(self, routes: Mapping[str, IResource]) -> None:
        for path, resource in routes.items():
            self.mount(path, resource)

    def match(self, path: bytes) -> tuple[str, IResource]:
        """The resource serving ``path`` and its route label (bounded, for metrics)."""
        resource = self.exact.get(path)
        if resource is not None:
            return self._labels[path, False], resource
        for prefix, candidate in self.prefixes:
            if path.startswith(prefix):
                return self._labels[prefix, True], candidate
        return "proxy", self.fallback

    def route_name(self, path: bytes) -> str:
        """The route label of ``path``: the mounted route, or ``proxy``."""
        return self.match(path)[0]

    # A leaf itself: Site never walks children, render() routes on the whole path once.
    isLeaf = True

    def host_refusal(self, request: Request) -> JSONError | None:
        """The answer for a request that names no host, several, or one this server does
        not answer for (http/hosts.py); None to serve it. Judged once per request: the
        head check (before the body) and render() share the verdict."""
        verdict = getattr(request, "_host_refusal", _UNJUDGED)
        if verdict is _UNJUDGED:
            verdict = self._judge_host(request)
            request._host_refusal = verdict  # type: ignore[attr-defined]
        return cast(JSONError | None, verdict)

    def _judge_host(self, request: Request) -> JSONError | None:
        hosts = self.hosts
        if hosts is None:
            return None
        values = request.requestHeaders.getRawHeaders(b"host")
        refusal = framing_error(request.uri, request.clientproto, values)
        if refusal is not None:
            return refusal
        host = values[0] if values else None
        if hosts.permits(host) or request.path in self.any_host_paths:
            return None
        return misdirected(host)

    def misdirected(self, request: Request) -> bool:
        """Whether ``request`` is refused for its host (BodyGate: answered before its body)."""
        return self.host_refusal(request) is not None

    def render(self, request: Request) -> Any:
        route, resource = self.match(request.path)
        request.route = route  # type: ignore[attr-defined]  # read by the metrics
        refusal = self.host_refusal(request)
        if refusal is not None:
            return render_error(request, refusal)
        try:
            return resource.render(request)
        except UnsupportedMethod as e:
            # Twisted answers a method it does not know (PUT, PATCH...) with a 501 HTML
            # page; this server knows them, the route just does not take them: 405.
            return method_not_allowed(request, e.allowedMethods)


def method_not_allowed(request: Request, allowed: Iterable[bytes]) -> bytes:
    """A JSON 405 with the ``Allow`` header naming the route's methods."""
    names = sorted({m.decode("ascii", "replace") for m in allowed})
    method = request.method.decode("ascii", "replace")[:20]
    return render_error(request, method_not_allowed_error(names, f"{method} is not allowed here"))


Check = Callable[[], tuple[bool, Any]]


@attrs.define
class Readiness:
    """Named readiness conditions; each answers (ready, detail)."""

    checks: dict[str, Check] = attrs.field(factory=dict)

    def register(self, name: str, check: Check) -> None:
        self.checks[name] = check

    def evaluate(self) -> tuple[bool, dict[str, Any], list[str]]:
        details: dict[str, Any] = {}
        not_ready: list[str] = []
        for name, check in self.checks.items():
            try:
                ok, detail = check()
            except Exception as e:  # a broken check means not ready, not a crash
                ok, detail = False, f"check failed: {e.__class__.__name__}"
            details[name] = detail
            if not ok:
                not_ready.append(name)
        return not not_ready, details, not_ready


class HealthResource(Resource):
    """Liveness: the process serves requests."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        return json_body(request, 200, {"status": "ok"}, {"Cache-Control": "no-store"})


# Headers a reverse proxy adds: a loopback peer sending one relays someone else's request.
_FORWARDING_HEADERS = (
    b"forwarded",
    b"x-forwarded-for",
    b"x-real-ip",
    b"true-client-ip",
    b"x-client-ip",
)


def is_local_caller(request: Request) -> bool:
    """True when the TCP peer itself is on this host (loopback or a UNIX socket) and the
    request was not relayed by a proxy. Never decided by X-Forwarded-For: clients write it."""
    peer = request.getClientAddress()
    if isinstance(peer, UNIXAddress):
        local = True
    else:
        local = is_loopback_host(getattr(peer, "host", None))
    return local and not any(request.requestHeaders.hasHeader(h) for h in _FORWARDING_HEADERS)


@attrs.define
class ReadyResource(Resource):
    """Readiness: 200 once every registered condition holds, else 503 naming what is missing.

    Details (key file paths, reload errors, IdP URLs) are shown to local callers only;
    everyone else sees each condition's name and whether it holds.
    """

    isLeaf = True
    readiness: Readiness

    def __attrs_post_init__(self) -> None:
        Resource.__init__(self)

    def render_GET(self, request: Request) -> bytes:
        ready, details, missing = self.readiness.evaluate()
        checks = details if is_local_caller(request) else {n: n not in missing for n in details}
        payload: dict[str, Any] = {"status": "ready" if ready else "not ready", "checks": checks}
        if not ready:
            payload["not_ready"] = missing
        return json_body(request, 200 if ready else 503, payload, {"Cache-Control": "no-store"})
