"""The HTML pages people see: one template family for the consent page and every error page.

Every page is self-contained (one inline style sheet, no script, no image, no third-party
asset), escapes every value it shows, and goes out with headers that forbid framing,
caching, MIME sniffing and referrers. An ``HTMLPageError`` (http/errors.py) is shown as a
:func:`message_page`.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from html import escape
from http import HTTPStatus

import attrs
from twisted.web.server import Request

from authproxy.authserver.redirect_uri import InvalidRedirectURI, parse_redirect_uri
from authproxy.http.responses import NO_STORE, set_headers

# Colours meet WCAG AA (>= 4.5:1) for text and >= 3:1 for focus rings in both schemes.
STYLE = """
:root{color-scheme:light dark;--bg:#f3f4f6;--card:#ffffff;--text:#1f2328;--muted:#4f5863;
--border:#d0d7de;--accent:#0b57d0;--on-accent:#ffffff;--note-bg:#fff8e1;--note-border:#9a6700;
--focus:#0b57d0;--code-bg:#eef1f4}
@media (prefers-color-scheme: dark){:root{--bg:#0d1117;--card:#161b22;--text:#e6edf3;
--muted:#a3adb8;--border:#3d444d;--accent:#8ab4f8;--on-accent:#0d1117;--note-bg:#2b2111;
--note-border:#d29922;--focus:#8ab4f8;--code-bg:#21262d}}
*{box-sizing:border-box}
html{font-size:100%;-webkit-text-size-adjust:100%}
body{margin:0;min-height:100vh;background:var(--bg);color:var(--text);
font:1rem/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",Helvetica,Arial,sans-serif;
display:flex;align-items:flex-start;justify-content:center;padding:2rem 1rem}
main{width:100%;max-width:34rem;background:var(--card);border:1px solid var(--border);
border-radius:12px;padding:1.75rem 1.75rem 1.5rem;box-shadow:0 1px 3px rgba(0,0,0,.08)}
.eyebrow{margin:0 0 .35rem;font-size:.8125rem;font-weight:600;letter-spacing:.04em;
text-transform:uppercase;color:var(--muted)}
h1{margin:0 0 1rem;font-size:1.5rem;line-height:1.25}
h2{margin:1.5rem 0 .5rem;font-size:1rem}
p{margin:0 0 1rem}
.lead{font-size:1.0625rem}
.muted,.fine{color:var(--muted)}
.fine{font-size:.875rem;margin:1.25rem 0 0}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9em;
background:var(--code-bg);border-radius:4px;padding:.05em .3em;overflow-wrap:anywhere}
dl{margin:0 0 1rem;border-top:1px solid var(--border)}
dl div{display:grid;grid-template-columns:9.5rem 1fr;gap:.25rem 1rem;padding:.6rem 0;
border-bottom:1px solid var(--border)}
dt{font-weight:600}
dd{margin:0;overflow-wrap:anywhere}
ul{margin:0 0 1rem;padding-left:1.25rem}
li{margin:.2rem 0}
.note{background:var(--note-bg);border-left:4px solid var(--note-border);border-radius:4px;
padding:.75rem 1rem;margin:1.25rem 0}
.actions{display:flex;flex-wrap:wrap;gap:.75rem;margin-top:1.5rem}
button{font:inherit;font-weight:600;min-height:44px;min-width:8rem;padding:.6rem 1.4rem;
border-radius:8px;cursor:pointer;border:2px solid var(--accent)}
button.primary{background:var(--accent);color:var(--on-accent)}
button.secondary{background:transparent;color:var(--text);border-color:var(--border)}
button:hover{filter:brightness(1.08)}
button:focus-visible{outline:3px solid var(--focus);outline-offset:3px}
input{font:inherit;width:100%;min-height:44px;padding:.5rem .75rem;color:var(--text);
background:var(--card);border:1px solid var(--muted);border-radius:8px}
input:focus-visible{outline:3px solid var(--focus);outline-offset:2px}
@media (max-width:30rem){body{padding:0}main{border-radius:0;border-width:0;min-height:100vh;
padding:1.5rem 1.1rem}dl div{grid-template-columns:1fr}.actions button{flex:1 1 100%}}
""".strip()

_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode("utf-8")).digest()).decode("ascii")

# No form-action on pages with a form: Chromium applies it to the redirects that follow a
# submission too (to the IdP, or to a client's private-use scheme), which we cannot list here.
_CSP_BASE = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; base-uri 'none'; frame-ancestors 'none'"
)
CSP_WITHOUT_FORMS = _CSP_BASE + "; form-action 'none'"
CSP_WITH_FORM = _CSP_BASE

PAGE_HEADERS = {
    **NO_STORE,
    "Content-Type": "text/html; charset=utf-8",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


_FORM_PAGE_HEADERS = {**PAGE_HEADERS, "Content-Security-Policy": CSP_WITH_FORM}
_PLAIN_PAGE_HEADERS = {**PAGE_HEADERS, "Content-Security-Policy": CSP_WITHOUT_FORMS}


def page_headers(*, has_form: bool = False) -> dict[str, str]:
    """The security headers every HTML page carries (framing, caching, sniffing, CSP)."""
    return _FORM_PAGE_HEADERS if has_form else _PLAIN_PAGE_HEADERS


def set_page_headers(request: Request, *, has_form: bool = False) -> None:
    """Put :func:`page_headers` on ``request``."""
    set_headers(request, page_headers(has_form=has_form))


def page_document(title: str, body_html: str, eyebrow: str = "") -> str:
    """A complete HTML document. ``title`` and ``eyebrow`` are escaped; ``body_html`` is not."""
    eyebrow_html = f'<p class="eyebrow">{escape(eyebrow)}</p>\n' if eyebrow else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="color-scheme" content="light dark">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<meta name="robots" content="noindex, nofollow">\n'
        f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f'<main aria-labelledby="page-title">\n{eyebrow_html}'
        f'<h1 id="page-title">{escape(title)}</h1>\n{body_html}\n</main>\n</body>\n</html>\n'
    )


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def utf8(document: str) -> bytes:
    """``document`` as UTF-8; a lone surrogate (JSON allows "\\ud800") becomes U+FFFD
    instead of failing the page."""
    return _LONE_SURROGATE.sub("\ufffd", document).encode("utf-8")


def _status_eyebrow(status: int) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"Error {status}" + (f" \u00b7 {phrase}" if phrase else "")


def render_page(
    request: Request,
    title: str,
    message: str,
    advice: str = "",
    status: int = 200,
    *,
    eyebrow: str | None = None,
) -> bytes:
    """A plain page (title, what happened, what to do) with its status and security headers.

    Every argument is text, escaped here. Status codes >= 400 get an "Error NNN" eyebrow.
    """
    request.setResponseCode(status)
    set_page_headers(request)
    return message_page(title, message, advice, status, eyebrow=eyebrow)


def message_page(
    title: str, message: str, advice: str = "", status: int = 200, *, eyebrow: str | None = None
) -> bytes:
    """The document of :func:`render_page` (what an ``HTMLPageError`` shows)."""
    parts = [f'<p class="lead">{escape(message)}</p>']
    if advice:
        parts.append(f'<h2 id="advice-heading">What you can do</h2>\n<p>{escape(advice)}</p>')
    if eyebrow is None:
        eyebrow = _status_eyebrow(status) if status >= 400 else ""
    return utf8(page_document(title, "\n".join(parts), eyebrow))


# -- the consent page -------------------------------------------------------------------------

SCOPE_WORDS = {
    "openid": "Confirm your identity",
    "profile": "See your name and basic profile information",
    "email": "See your email address",
    "offline_access": "Stay signed in (refresh tokens)",
}


@attrs.frozen
class ConsentView:
    """What the consent page shows; every value is untrusted text and is escaped on output."""

    client_id: str
    client_name: str | None
    redirect_uri: str
    scopes: tuple[str, ...]
    resource: str
    state: str
    csrf_token: str
    action: str = "/oauth/consent"
    remember_for: float | None = None  # seconds an approval is remembered in this browser
    # The host of the client's metadata document (client_id URL), where its identity comes from
    document_host: str | None = None


def redirect_target(uri: str) -> tuple[str, bool]:
    """(what to call the place a redirect URI leads, whether it is this computer).

    Read with the same parser as registration and matching, so the page names the host a
    browser would go to; a URI it refuses is shown whole and never called local.
    """
    try:
        parsed = parse_redirect_uri(uri)
    except InvalidRedirectURI:
        return uri, False
    if parsed.is_web:
        return parsed.shown_host, parsed.is_loopback
    # A private-use scheme (cursor://, vscode://) opens an app installed on this device.
    return (f"{parsed.scheme}://{parsed.host}" if parsed.host else f"{parsed.scheme}:"), True


def scope_items(scopes: Sequence[str]) -> list[str]:
    """The requested scopes as HTML list items in plain words (unknown ones verbatim)."""
    items = []
    for scope in scopes:
        words = SCOPE_WORDS.get(scope)
        if words is not None:
            items.append(f"<li>{escape(words)}</li>")
        else:
            items.append(f"<li>Use the permission <code>{escape(scope)}</code></li>")
    return items


def _span(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = round(seconds / size)
            return f"{count} {unit}" + ("s" if count != 1 else "")
    return f"{round(seconds)} seconds"


def _document_parts(view: ConsentView) -> tuple[str, str]:
    """(the "Identity from" row, the different-host warning) for a metadata document client.

    The warning is for a web redirect URI on another host than the document's: the code
    would go to a site the document's publisher does not obviously control. A loopback or
    private-use redirect URI goes to an app on this device, which the page already says.
    """
    if view.document_host is None:
        return "", ""
    host = escape(view.document_host)
    row = (
        f"<div><dt>Identity from</dt><dd><code>{host}</code> "
        '<span class="muted">(the application describes itself there)</span></dd></div>\n'
    )
    try:
        target = parse_redirect_uri(view.redirect_uri)
    except InvalidRedirectURI:
        return row, ""
    try:
        document_origin = parse_redirect_uri(view.client_id).origin
    except InvalidRedirectURI:
        document_origin = None
    if not target.is_web or target.is_loopback or target.origin == document_origin:
        return row, ""
    note = (
        f'<p class="note"><strong>Different site:</strong> this application\u2019s identity '
        f"comes from <code>{host}</code>, but it sends you back to "
        f"<code>{escape(target.shown_host)}</code>. Continue only if you trust both.</p>\n"
    )
    return row, note


def consent_body(view: ConsentView) -> str:
    """The consent page's body HTML."""
    if view.client_name and view.client_name.strip():
        name_html = f"<strong>\u201c{escape(view.client_name.strip())}\u201d</strong>"
        who = f"An application that calls itself {name_html}"
        app_dd = (
            f'{name_html}<br><span class="muted">This name was chosen by the application '
            "itself and has not been verified.</span>"
        )
    else:
        who = "An application that did not give its name"
        app_dd = f'<span class="muted">No name given (client id <code>{escape(view.client_id)}'
        app_dd += "</code>)</span>"
    target, local = redirect_target(view.redirect_uri)
    target_dd = f"<code>{escape(target)}</code>"
    if local:
        target_dd += ' <span class="muted">(an application on this device)</span>'
    identity_row, mismatch_note = _document_parts(view)
    resource = view.resource or "this server"
    remember = ""
    if view.remember_for:
        remember = f" Your approval is remembered in this browser for {_span(view.remember_for)}."
    scopes = ["<li>Use this server as you</li>", *scope_items(view.scopes)]
    return f"""<p class="lead">{who} wants to use <code>{escape(resource)}</code> on your behalf.</p>
<dl>
<div><dt>Application</dt><dd>{app_dd}</dd></div>
{identity_row}<div><dt>Sends you back to</dt><dd>{target_dd}</dd></div>
</dl>
{mismatch_note}
<h2 id="scopes-heading">If you approve, it will be able to</h2>
<ul aria-labelledby="scopes-heading">
{chr(10).join(scopes)}
</ul>
<p class="note"><strong>Approve only if you just started connecting this application.</strong>
If you did not, or the address above is not one you expect, choose Deny.</p>
<form method="post" action="{escape(view.action)}">
<input type="hidden" name="state" value="{escape(view.state)}">
<input type="hidden" name="csrf_token" value="{escape(view.csrf_token)}">
<div class="actions" role="group" aria-label="Your decision">
<button type="submit" name="decision" value="approve" class="primary">Approve</button>
<button type="submit" name="decision" value="deny" class="secondary">Deny</button>
</div>
</form>
<p class="fine">After you approve, you will sign in with your organisation\u2019s account.{remember}</p>"""


def render_consent(request: Request, view: ConsentView) -> bytes:
    """The consent page (200) with its security headers."""
    request.setResponseCode(200)
    set_page_headers(request, has_form=True)
    return utf8(page_document("Allow access?", consent_body(view), "Sign-in"))
