"""The development upstream: loopback-only check, login page, code redemption, opaque tokens."""

from __future__ import annotations

import html
import re
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

import attrs
import treq
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from authproxy.config import Config, ConfigError, config_from_mapping
from authproxy.http.loopback import listen_is_loopback
from authproxy.http.routing import PrefixTable
from authproxy.storage.memory import memory_storage
from authproxy.storage.models import PendingAuthorization
from authproxy.upstream.development import (
    CODE_LIFETIME,
    LOGIN_PATH,
    DevelopmentProvider,
    development_listen_problems,
    valid_username,
)
from authproxy.upstream.interface import (
    IUpstreamProvider,
    UpstreamDenied,
    UpstreamError,
    UpstreamSessionEnded,
)
from authproxy.upstream.registry import make_upstream_provider

START = 1_700_000_000.0


def dev_config(listen: tuple[str, ...] = ("tcp:8080:interface=127.0.0.1",)) -> Config:
    config = config_from_mapping(
        {
            "server": {"public_url": "http://127.0.0.1:8080"},
            "backend": {"url": "http://127.0.0.1:9000"},
            "upstream": {"type": "development"},
        }
    )
    # listen strings set directly: some (ssl, systemd) need files or sockets to validate
    return attrs.evolve(config, server=attrs.evolve(config.server, listen=listen))


class LoopbackCheckTests(SynchronousTestCase):
    def test_listen_table(self) -> None:
        loopback = [
            "tcp:8080:interface=127.0.0.1",
            "tcp:port=8080:interface=127.0.0.2",
            "tcp:8080:127.0.0.1",
            "tcp:8080:interface=localhost",
            r"tcp6:8080:interface=\:\:1",
            "ssl:8443:privateKey=key.pem:certKey=cert.pem:interface=127.0.0.1",
            "unix:/run/authproxy.sock",
            "UNIX:address=/tmp/a.sock",
        ]
        public = [
            "tcp:8080",
            "tcp:8080:interface=0.0.0.0",
            "tcp:8080:interface=",
            "tcp:8080:interface=192.168.1.5",
            r"tcp6:8080:interface=\:\:",
            "ssl:8443:privateKey=key.pem",
            "systemd:domain=INET:index=0",
            "8080",
            "",
        ]
        for description in loopback:
            self.assertTrue(listen_is_loopback(description), description)
        for description in public:
            self.assertFalse(listen_is_loopback(description), description)

    def test_development_listen_problems(self) -> None:
        self.assertEqual(development_listen_problems(("tcp:8080:interface=127.0.0.1",)), [])
        problems = development_listen_problems(
            ("tcp:8080:interface=127.0.0.1", "tcp:8443", "systemd:domain=INET:index=0")
        )
        self.assertEqual(len(problems), 2)
        self.assertTrue(problems[0].startswith('server.listen[1]: "tcp:8443" is not a loopback'))
        self.assertTrue(problems[1].startswith("server.listen[2]:"))

    def test_validation_reports_it_with_the_other_problems(self) -> None:
        """One round of fixes: the public listen is reported with every other problem."""
        error = self.assertRaises(
            ConfigError,
            config_from_mapping,
            {
                "server": {"public_url": "http://127.0.0.1:8080", "listen": ["tcp:8080"]},
                "backend": {"url": "http://127.0.0.1:9000"},
                "upstream": {"type": "development"},
                "logging": {"format": "yaml"},
            },
        )
        self.assertEqual(
            [p.split(":", 1)[0] for p in error.problems], ["server.listen[0]", "logging.format"]
        )

    def test_other_types_unaffected(self) -> None:
        config = config_from_mapping(
            {
                "server": {"public_url": "http://127.0.0.1:8080", "listen": ["tcp:8080"]},
                "backend": {"url": "http://127.0.0.1:9000"},
                "upstream": {
                    "type": "oidc",
                    "issuer_url": "https://idp.example.test",
                    "client_id": "authproxy",
                },
            }
        )
        self.assertEqual(config.server.listen, ("tcp:8080",))

    def test_factory_refuses(self) -> None:
        clock = Clock()
        error = self.assertRaises(
            ConfigError,
            make_upstream_provider,
            dev_config(("tcp:8080",)),
            memory_storage(clock),
            clock,
        )
        self.assertIn("server.listen[0]", str(error))


class DevelopmentFlowTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, self.events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.clock = Clock()
        self.clock.advance(START)
        self.storage = memory_storage(self.clock)
        self.provider: Any = make_upstream_provider(
            dev_config(), self.storage.upstream_sessions, self.clock
        )
        routes = self.provider.routes()
        self.assertEqual(list(routes), [LOGIN_PATH])
        root = PrefixTable()
        root.mount_all(routes)
        self.http: Any = StubTreq(root)

    def pending(self, state: str) -> PendingAuthorization:
        return PendingAuthorization(
            state=state,
            client_id="c",
            redirect_uri="http://127.0.0.1:5555/cb",
            client_state=None,
            code_challenge="x" * 43,
            code_challenge_method="S256",
            scopes=("openid",),
            resource="http://127.0.0.1:8080/mcp",
            created_at=START,
            expires_at=START + 600,
        )

    def get(self, url: str) -> tuple[int, str]:
        response = self.successResultOf(self.http.get(url))
        return response.code, self.successResultOf(treq.text_content(response))

    def post(self, username: str, state: str) -> Any:
        return self.successResultOf(
            self.http.post(
                "http://127.0.0.1:8080" + LOGIN_PATH,
                data={"username": username, "state": state},
                allow_redirects=False,
            )
        )

    def login(self, username: str = "bob", state: str = "st-1") -> dict[str, str]:
        response = self.post(username, state)
        self.assertEqual(response.code, 303)
        location = response.headers.getRawHeaders("location")[0]
        self.assertTrue(location.startswith("http://127.0.0.1:8080/oauth/callback?"))
        return dict(parse_qsl(urlsplit(location).query))

    def test_interface_and_readiness(self) -> None:
        self.assertTrue(verifyObject(IUpstreamProvider, self.provider))
        self.assertEqual(self.provider.readiness()[0], True)
        self.assertEqual(self.provider.services(), [])
        self.assertEqual(self.provider.name, "development")

    def test_warning_logged(self) -> None:
        warnings = [e for e in self.events if e.get("log_level") and e["log_level"].name == "warn"]
        self.assertTrue(any("development" in e["log_format"] for e in warnings))

    def test_start_login(self) -> None:
        login = self.provider.start_login("st-1")
        self.assertEqual(login.url, "http://127.0.0.1:8080/oauth/dev-login?state=st-1")

    def test_login_page(self) -> None:
        code, body = self.get(self.provider.start_login('a"><script>x</script>').url)
        self.assertEqual(code, 200)
        self.assertIn('name="username"', body)
        self.assertIn('type="hidden" name="state" value="a&quot;&gt;&lt;script&gt;', body)
        self.assertNotIn("<script>", body)

    def test_login_page_needs_state(self) -> None:
        code, body = self.get("http://127.0.0.1:8080" + LOGIN_PATH)
        self.assertEqual(code, 400)
        self.assertEqual(self.post("bob", "").code, 400)

    def test_bad_usernames(self) -> None:
        bad = ("", "a b", "x" * 65, "<b>", "bob@", "@host", "a@b@c", "a@b..c", "jos\u00e9")
        for username in bad:
            response = self.post(username, "st-1")
            self.assertEqual(response.code, 400, username)
            body = self.successResultOf(treq.text_content(response))
            self.assertNotIn("<b>", body)

    def test_unreadable_forms_show_the_login_page_again(self) -> None:
        url = "http://127.0.0.1:8080" + LOGIN_PATH
        urlencoded = {"Content-Type": ["application/x-www-form-urlencoded"]}
        cases = [
            (
                {"Content-Type": ["application/json"]},
                b'{"username": "bob"}',
                "was not sent as form data",
            ),
            (urlencoded, b"state=s&username=" + b"x" * 4096, "was too large"),
            (urlencoded, b"state=s&username=bob&username=eve", "repeated the field username"),
            (urlencoded, b"state=s&username=\xff", "could not be decoded"),
        ]
        for headers, body, message in cases:
            response = self.successResultOf(
                self.http.post(url, data=body, headers=headers, allow_redirects=False)
            )
            self.assertEqual(response.code, 400, message)
            page = self.successResultOf(treq.text_content(response))
            self.assertIn(f"The login form {message}", page)
            self.assertIn('name="username"', page)

    def test_flow(self) -> None:
        args = self.login("bob", "st-1")
        self.assertEqual(args["state"], "st-1")
        identity = self.successResultOf(self.provider.finish_login(args, self.pending("st-1")))
        self.assertEqual(
            (identity.subject, identity.name, identity.email), ("bob", "bob", "bob@localhost")
        )
        session = self.successResultOf(
            self.storage.upstream_sessions.get_upstream_session(identity.tsid)
        )
        assert session is not None
        self.assertEqual(session.expires_at, START + 7 * 86400)
        token = self.successResultOf(self.provider.upstream_access_token(identity.tsid))
        self.assertEqual(token, session.access_token)
        self.assertNotIn(".", token)  # opaque: never a JWT
        self.assertGreaterEqual(len(token), 40)
        # the code is single use
        self.failureResultOf(self.provider.finish_login(args, self.pending("st-1")), UpstreamError)

    def test_email_accepted(self) -> None:
        args = self.login("alice@example.com", "st-1")
        identity = self.successResultOf(self.provider.finish_login(args, self.pending("st-1")))
        self.assertEqual(
            (identity.subject, identity.name, identity.email),
            ("alice@example.com", "alice@example.com", "alice@example.com"),
        )

    def test_page_says_what_is_allowed(self) -> None:
        _, body = self.get(self.provider.start_login("st-1").url)
        self.assertIn('aria-describedby="username-rule"', body)
        self.assertIn("an email address (alice@example.com)", body)
        pattern = re.search(r'pattern="([^"]+)"', body)
        assert pattern is not None
        # the browser's check (the pattern, anchored as HTML does) agrees with the server's
        for name in ("alice@example.com", "bob", "a.b+c@mail.example-1.org", "a@b@c", "a b"):
            self.assertEqual(
                re.fullmatch(html.unescape(pattern.group(1)), name) is not None,
                valid_username(name),
                name,
            )

    def test_refused_name_says_what_is_allowed(self) -> None:
        response = self.post("a b", "st-1")
        body = self.successResultOf(treq.text_content(response))
        self.assertIn("That user name is not accepted. A name (alice)", body)

    def test_token_renewed_after_an_hour(self) -> None:
        args = self.login()
        identity = self.successResultOf(self.provider.finish_login(args, self.pending("st-1")))
        first = self.successResultOf(self.provider.upstream_access_token(identity.tsid))
        self.clock.advance(3600)
        second = self.successResultOf(self.provider.upstream_access_token(identity.tsid))
        self.assertNotEqual(first, second)
        self.successResultOf(self.provider.end_session(identity.tsid))
        self.failureResultOf(
            self.provider.upstream_access_token(identity.tsid), UpstreamSessionEnded
        )

    def test_state_must_match(self) -> None:
        args = self.login("bob", "st-1")
        self.failureResultOf(self.provider.finish_login(args, self.pending("st-2")), UpstreamError)

    def test_code_expires(self) -> None:
        args = self.login()
        self.clock.advance(CODE_LIFETIME)
        self.failureResultOf(self.provider.finish_login(args, self.pending("st-1")), UpstreamError)

    def test_unknown_code(self) -> None:
        self.failureResultOf(
            self.provider.finish_login({"code": "nope", "state": "st-1"}, self.pending("st-1")),
            UpstreamError,
        )
        self.failureResultOf(
            self.provider.finish_login({"state": "st-1"}, self.pending("st-1")), UpstreamError
        )

    def test_error_denies(self) -> None:
        self.failureResultOf(
            self.provider.finish_login(
                {"error": "access_denied", "state": "st-1"}, self.pending("st-1")
            ),
            UpstreamDenied,
        )

    def test_codes_are_bounded(self) -> None:
        provider: DevelopmentProvider = self.provider
        first = provider.issue_code("a", "s")
        for _ in range(1000):
            provider.issue_code("a", "s")
        self.failureResultOf(
            provider.finish_login({"code": first, "state": "s"}, self.pending("s")), UpstreamError
        )

    def test_page_headers(self) -> None:
        response = self.successResultOf(self.http.get(self.provider.start_login("s").url))
        headers = response.headers
        self.assertEqual(headers.getRawHeaders("cache-control"), ["no-store"])
        self.assertIn("frame-ancestors 'none'", headers.getRawHeaders("content-security-policy")[0])
        self.assertEqual(headers.getRawHeaders("x-frame-options"), ["DENY"])
