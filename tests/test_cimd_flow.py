"""Client ID metadata documents through the authorization server: authorize, consent, token,
metadata, and registration turned off. Documents come from an in-memory network
(test_cimd.Documents); over a real loopback connection: test_cimd_loopback."""

from __future__ import annotations

import json
import re
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from authproxy.testing.upstream import AuthServerHarness, s256_pair
from tests.test_cimd import URL, DocumentResource, Documents, vscode_like

REDIRECT = "http://127.0.0.1:33418/"


def harness(docs: Documents, config: dict[str, Any] | None = None) -> AuthServerHarness:
    h = AuthServerHarness(config, documents=docs.documents)
    docs.clock.advance(h.clock.seconds())
    return h


class DocumentClientFlowTests(SynchronousTestCase):
    def test_login_with_a_document_client(self) -> None:
        docs = Documents()
        h = harness(docs)
        client = {"client_id": URL, "redirect_uris": [REDIRECT]}
        verifier, challenge = s256_pair()
        # the loopback port rule holds as for registered clients
        callback = h.login(client, challenge, redirect_uri="http://127.0.0.1:50123/")
        tokens = h.redeem(
            client, callback["code"], verifier, redirect_uri="http://127.0.0.1:50123/"
        )
        self.assertEqual(tokens.code, 200, tokens.body)
        refreshed = h.refresh(client, tokens.json()["refresh_token"])
        self.assertEqual(refreshed.code, 200)
        self.assertEqual(docs.resource.requests, 1)  # cached across authorize and token

    def test_unusable_document_gives_the_error_page_not_a_redirect(self) -> None:
        docs = Documents(DocumentResource(vscode_like(client_id="https://other.example/c.json")))
        h = harness(docs)
        _, challenge = s256_pair()
        page = h.get(h.authorize_url({"client_id": URL, "redirect_uris": [REDIRECT]}, challenge))
        self.assertEqual(page.code, 400)
        self.assertIsNone(page.header("location"))
        self.assertIn("text/html", page.header("content-type") or "")
        self.assertIn(b"client_id is not the URL it was fetched from", page.body)

    def test_unusable_document_at_the_token_endpoint_is_invalid_client(self) -> None:
        docs = Documents()
        docs.resource.status = 404
        h = harness(docs)
        answer = h.post_form(
            "/oauth/token",
            {"grant_type": "authorization_code", "code": "x", "client_id": URL},
        )
        self.assertEqual(answer.code, 401)
        body = answer.json()
        self.assertEqual(body["error"], "invalid_client")
        self.assertIn("HTTP 404", body["error_description"])

    def test_redirect_uri_not_in_the_document(self) -> None:
        h = harness(Documents())
        _, challenge = s256_pair()
        client = {"client_id": URL, "redirect_uris": ["https://evil.example/cb"]}
        page = h.get(h.authorize_url(client, challenge))
        self.assertEqual((page.code, page.header("location")), (400, None))

    def test_disabled_documents_are_unknown_clients(self) -> None:
        docs = Documents()
        h = harness(docs, {"auth_server": {"client_metadata_documents": {"enabled": False}}})
        _, challenge = s256_pair()
        page = h.get(h.authorize_url({"client_id": URL, "redirect_uris": [REDIRECT]}, challenge))
        self.assertEqual(page.code, 400)
        self.assertIn(b"not registered", page.body)
        self.assertEqual(docs.resource.requests, 0)
        metadata = h.get("/.well-known/oauth-authorization-server").json()
        self.assertNotIn("client_id_metadata_document_supported", metadata)


class ConsentTests(SynchronousTestCase):
    def consent_page(
        self, redirect_uris: list[str]
    ) -> tuple[AuthServerHarness, Documents, bytes, str]:
        docs = Documents(DocumentResource(vscode_like(redirect_uris=redirect_uris)))
        h = harness(docs, {"auth_server": {"consent": "remember"}})
        _, challenge = s256_pair()
        client = {"client_id": URL, "redirect_uris": redirect_uris}
        url = h.authorize_url(client, challenge)
        page = h.get(url)
        self.assertEqual(page.code, 200)
        return h, docs, page.body, url

    def approve(self, h: AuthServerHarness, body: bytes) -> None:
        """Approve the consent page ``body``."""
        fields = dict(re.findall(rb'name="(state|csrf_token)" value="([^"]+)"', body))
        approved = h.post_form(
            "/oauth/consent",
            {
                "state": fields[b"state"].decode(),
                "csrf_token": fields[b"csrf_token"].decode(),
                "decision": "approve",
            },
        )
        self.assertEqual(approved.code, 302, approved.body)

    def test_shows_where_the_identity_comes_from(self) -> None:
        _, _, body, _ = self.consent_page([REDIRECT])
        self.assertIn(b"Identity from", body)
        self.assertIn(b"<code>vscode.example</code>", body)
        self.assertNotIn(b"Different site", body)  # a loopback redirect: an app on this device

    def test_warns_when_the_redirect_host_differs(self) -> None:
        _, _, body, _ = self.consent_page(["https://elsewhere.example/cb"])
        self.assertIn(b"Different site", body)
        self.assertIn(b"<code>elsewhere.example</code>", body)
        _, _, same, _ = self.consent_page(["https://vscode.example/cb"])
        self.assertNotIn(b"Different site", same)
        # the same host name on another port is another site (another server, maybe
        # another owner: a shared host's users on their own ports)
        _, _, port, _ = self.consent_page(["https://vscode.example:8443/cb"])
        self.assertIn(b"Different site", port)
        self.assertIn(b"<code>vscode.example:8443</code>", port)

    def test_remembered_consent_is_for_one_redirect_uri(self) -> None:
        """A document may change its redirect_uris while consent is remembered: consent
        given for one redirect URI does not send codes to another without asking."""
        first, second = "https://vscode.example/cb", "https://vscode.example/other"
        h, _, body, _ = self.consent_page([first, second])
        self.approve(h, body)
        client = {"client_id": URL, "redirect_uris": [first, second]}
        self.assertEqual(h.get(h.authorize_url(client, "x" * 43, redirect_uri=first)).code, 302)
        page = h.get(h.authorize_url(client, "x" * 43, redirect_uri=second))
        self.assertEqual(page.code, 200)
        self.assertIn(b"Allow access?", page.body)

    def test_consent_is_remembered_per_document_url(self) -> None:
        h, docs, body, url = self.consent_page([REDIRECT])
        self.approve(h, body)
        again = h.get(url)
        self.assertEqual(again.code, 302)  # straight to the IdP: remembered
        # another document URL on the same host is another client: asked again
        other = "https://vscode.example/other-client.json"
        docs.resource.body = json.dumps(vscode_like(other)).encode()
        page = h.get(h.authorize_url({"client_id": other, "redirect_uris": [REDIRECT]}, "x" * 43))
        self.assertEqual(page.code, 200)
        self.assertIn(b"Allow access?", page.body)


class MetadataAndRegistrationTests(SynchronousTestCase):
    def test_metadata_advertises_documents(self) -> None:
        h = harness(Documents())
        metadata = h.get("/.well-known/oauth-authorization-server").json()
        self.assertIs(metadata["client_id_metadata_document_supported"], True)
        self.assertEqual(metadata["registration_endpoint"], h.base + "/oauth/register")

    def test_registration_can_be_turned_off(self) -> None:
        h = harness(Documents(), {"auth_server": {"registration": {"enabled": False}}})
        metadata = h.get("/.well-known/openid-configuration").json()
        self.assertNotIn("registration_endpoint", metadata)
        answer = h.request("POST", "/oauth/register", json_body={"redirect_uris": [REDIRECT]})
        self.assertEqual(answer.code, 403)
        self.assertIn("registration is turned off", json.loads(answer.body)["error_description"])
