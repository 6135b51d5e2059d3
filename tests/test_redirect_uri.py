"""Redirect URIs are read the way browsers read them, everywhere, or refused.

The differential table: for each tricky URI, the host a browser (WHATWG URL) goes to, what
``parse_redirect_uri`` makes of it, and whether the registration rule accepts it. When
``node`` is installed, its WHATWG ``URL`` confirms the browser column.
"""

from __future__ import annotations

import json
import shutil
import subprocess

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from authproxy.authserver.redirect_uri import (
    InvalidRedirectURI,
    check_redirect_uri,
    parse_redirect_uri,
    redirect_uri_matches,
)
from authproxy.http.pages import redirect_target

# (URI, host:port a browser sends the code to (None: browsers refuse it too),
#  what the parser reads (None: refused), registrable)
TABLE: list[tuple[str, str | None, str | None, bool]] = [
    ("http://127.0.0.1/cb", "127.0.0.1", "127.0.0.1", True),
    ("http://127.0.0.1:33418/cb", "127.0.0.1:33418", "127.0.0.1:33418", True),
    ("http://[::1]:5/cb", "[::1]:5", "[::1]:5", True),
    ("http://localhost:3000/cb", "localhost:3000", "localhost:3000", True),
    ("http://LOCALHOST:3000/cb", "localhost:3000", "localhost:3000", True),
    ("https://app.example.com/cb?x=1", "app.example.com", "app.example.com", True),
    ("https://app.example.com:8443/cb", "app.example.com:8443", "app.example.com:8443", True),
    # the backslash: Python sees userinfo and host 127.0.0.1, browsers see evil.example
    ("http://evil.example\\@127.0.0.1/cb", "evil.example", None, False),
    ("http://127.0.0.1\\@evil.example/cb", "127.0.0.1", None, False),
    ("https://app.example.com\\.evil.example/cb", "app.example.com", None, False),
    # userinfo
    ("http://127.0.0.1@evil.example/", "evil.example", None, False),
    ("http://evil.example@127.0.0.1/cb", "127.0.0.1", None, False),
    ("http://127.0.0.1:80@evil.example/cb", "evil.example", None, False),
    # look-alike names are remote hosts
    ("http://127.0.0.1.evil.example/", "127.0.0.1.evil.example", "127.0.0.1.evil.example", False),
    ("http://localhost.evil.example/cb", "localhost.evil.example", "localhost.evil.example", False),
    # non-canonical IPv4: browsers read them as 127.0.0.1, Python does not
    ("http://127.1/cb", "127.0.0.1", None, False),
    ("http://2130706433/cb", "127.0.0.1", None, False),
    ("http://0x7f000001/cb", "127.0.0.1", None, False),
    ("http://0177.0.0.1/cb", "127.0.0.1", None, False),
    ("http://127.0.0.0x1/cb", "127.0.0.1", None, False),
    ("http://127.0.0.1./cb", "127.0.0.1", None, False),
    ("http://localhost./cb", "localhost.", None, False),
    ("https://evil.example.123/cb", None, None, False),
    # IPv6 forms
    ("http://[::ffff:127.0.0.1]/", "[::ffff:7f00:1]", None, False),
    ("http://[::ffff:7f00:1]/", "[::ffff:7f00:1]", None, False),
    ("http://[0:0:0:0:0:0:0:1]/cb", "[::1]", None, False),
    ("http://[::1%25eth0]/cb", None, None, False),
    # percent-encoded hosts
    ("http://%31%32%37.0.0.1/cb", "127.0.0.1", None, False),
    ("http://evil%2eexample/cb", "evil.example", None, False),
    # tabs, newlines, spaces: browsers drop tabs and newlines anywhere
    ("http://127.0.0.1\t/cb", "127.0.0.1", None, False),
    ("http://evil.exa\nmple/cb", "evil.example", None, False),
    ("http://127.0.0.1/c b", "127.0.0.1", None, False),
    (" http://127.0.0.1/cb", "127.0.0.1", None, False),
    # slashes browsers skip
    ("http:/127.0.0.1/cb", "127.0.0.1", None, False),
    ("http:///127.0.0.1/cb", "127.0.0.1", None, False),
    # ports
    ("http://127.0.0.1:/cb", "127.0.0.1", None, False),
    ("http://127.0.0.1:080/cb", "127.0.0.1", None, False),
    ("http://127.0.0.1:99999/cb", None, None, False),
    # non-ASCII hosts (IDNA) are refused rather than guessed
    ("https://exаmple.com/cb", "xn--exmple-4nf.com", None, False),
    # plain http elsewhere, fragments, schemes browsers run
    ("http://app.example.com/cb", "app.example.com", "app.example.com", False),
    ("https://app.example.com/cb#x", "app.example.com", None, False),
    ("ws://127.0.0.1/cb", "127.0.0.1", None, False),
    ("javascript:alert(1)//127.0.0.1", None, None, False),
]

# Private-use schemes (RFC 8252 §7.1) keep working: (URI, what the consent page shows).
PRIVATE_USE = [
    ("com.example.app:/oauth2redirect", "com.example.app:"),
    (
        "cursor://anysphere.cursor-retrieval/oauth/user-x/callback",
        "cursor://anysphere.cursor-retrieval",
    ),
    (
        "vscode://vscode.github-authentication/did-authenticate",
        "vscode://vscode.github-authentication",
    ),
    ("myapp:callback", "myapp:"),
]


def read(uri: str) -> str | None:
    try:
        return parse_redirect_uri(uri).shown_host
    except InvalidRedirectURI:
        return None


class DifferentialTests(SynchronousTestCase):
    def test_parser_never_disagrees_with_browsers(self) -> None:
        for uri, browser, parsed, _ in TABLE:
            with self.subTest(uri=uri):
                self.assertEqual(read(uri), parsed)
                if parsed is not None:
                    self.assertEqual(parsed, browser)

    def test_registration_rule(self) -> None:
        for uri, _, _, registrable in TABLE:
            with self.subTest(uri=uri):
                why = check_redirect_uri(uri, 2048)
                self.assertEqual(why is None, registrable, why)

    def test_consent_page_calls_only_loopback_local(self) -> None:
        for uri, browser, _, _ in TABLE:
            with self.subTest(uri=uri):
                _, local = redirect_target(uri)
                if local:
                    self.assertRegex(browser or "", r"^(127\.0\.0\.1|localhost|\[::1\])(:\d+)?$")
        self.assertEqual(
            redirect_target("http://evil.example\\@127.0.0.1/cb"),
            ("http://evil.example\\@127.0.0.1/cb", False),
        )

    def test_private_use_schemes_still_work(self) -> None:
        for uri, shown in PRIVATE_USE:
            with self.subTest(uri=uri):
                self.assertIsNone(check_redirect_uri(uri, 2048))
                self.assertEqual(redirect_target(uri), (shown, True))
                self.assertTrue(redirect_uri_matches(uri, uri))
        for uri in ("myapp:", "myapp://u@host/cb", "com.example.app:/cb#f"):
            self.assertIsNotNone(check_redirect_uri(uri, 2048), uri)

    def test_matching_refuses_what_the_parser_refuses(self) -> None:
        # Even an identical string is not followed when browsers would read it differently
        # (a registration made before the rule tightened).
        bad = "http://evil.example\\@127.0.0.1/cb"
        self.assertFalse(redirect_uri_matches(bad, bad))
        self.assertFalse(redirect_uri_matches("http://127.0.0.1/cb", "http://127.1:5/cb"))
        self.assertFalse(redirect_uri_matches("http://127.0.0.1/cb", "http://127.0.0.1\t:5/cb"))
        self.assertTrue(redirect_uri_matches("http://[::1]/cb", "http://[::1]:5/cb"))
        self.assertTrue(redirect_uri_matches("http://LOCALHOST/cb", "http://localhost:5/cb"))
        self.assertFalse(redirect_uri_matches("http://localhost/cb", "http://127.0.0.1:5/cb"))

    def test_browser_column_is_what_node_reads(self) -> None:
        """The table's browser column, checked against a real WHATWG URL implementation."""
        node = shutil.which("node")
        if node is None:
            raise SkipTest("node is not installed")
        script = (
            "const uris = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
            "console.log(JSON.stringify(uris.map(u => {"
            " try { const x = new URL(u); return x.host; } catch (e) { return null; } })));"
        )
        uris = [uri for uri, *_ in TABLE if uri.split(":", 1)[0] in ("http", "https", "ws")]
        out = subprocess.run(
            [node, "-e", script], input=json.dumps(uris), capture_output=True, text=True, check=True
        )
        expected = {uri: browser for uri, browser, *_ in TABLE}
        for uri, host in zip(uris, json.loads(out.stdout), strict=True):
            with self.subTest(uri=uri):
                self.assertEqual(host, expected[uri])
