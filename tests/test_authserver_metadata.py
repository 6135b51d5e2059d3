"""Authorization server metadata (RFC 8414) and OIDC discovery."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from authproxy.authserver.metadata import metadata_paths
from authproxy.keys.ring import KeySet, generate_ephemeral_key
from authproxy.testing.upstream import AuthServerHarness

OAUTH = "/.well-known/oauth-authorization-server"
OIDC = "/.well-known/openid-configuration"


class MetadataTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = AuthServerHarness()

    def test_rfc8414_document(self) -> None:
        result = self.h.get(OAUTH)
        self.assertEqual(result.code, 200)
        self.assertEqual(result.header("content-type"), "application/json")
        doc = result.json()
        base = "http://127.0.0.1:8080"
        self.assertEqual(doc["issuer"], base)
        self.assertEqual(doc["authorization_endpoint"], base + "/oauth/authorize")
        self.assertEqual(doc["token_endpoint"], base + "/oauth/token")
        self.assertEqual(doc["registration_endpoint"], base + "/oauth/register")
        self.assertEqual(doc["revocation_endpoint"], base + "/oauth/revoke")
        self.assertEqual(doc["jwks_uri"], base + "/.well-known/jwks.json")
        self.assertEqual(doc["response_types_supported"], ["code"])
        self.assertEqual(doc["grant_types_supported"], ["authorization_code", "refresh_token"])
        self.assertEqual(doc["code_challenge_methods_supported"], ["S256"])
        self.assertEqual(doc["token_endpoint_auth_methods_supported"], ["none"])
        self.assertEqual(doc["scopes_supported"], ["openid", "profile", "email", "offline_access"])
        self.assertIs(doc["authorization_response_iss_parameter_supported"], True)
        self.assertNotIn("subject_types_supported", doc)

    def test_openid_configuration(self) -> None:
        doc = self.h.get(OIDC).json()
        self.assertEqual(doc["issuer"], "http://127.0.0.1:8080")
        self.assertEqual(doc["code_challenge_methods_supported"], ["S256"])
        self.assertEqual(doc["subject_types_supported"], ["public"])
        self.assertEqual(doc["id_token_signing_alg_values_supported"], ["ES256"])

    def test_openid_algs_follow_the_ring(self) -> None:
        self.h.get(OIDC)
        from cryptography.hazmat.primitives.asymmetric import ed25519

        from authproxy.keys.ring import SigningKey

        ed = SigningKey.from_private_key(ed25519.Ed25519PrivateKey.generate(), source="test")
        self.h.ring.replace(
            KeySet(
                signing_keys=(ed, generate_ephemeral_key()),
                hmac_secrets=self.h.ring.hmac_secrets,
            )
        )
        doc = self.h.get(OIDC).json()
        self.assertEqual(doc["id_token_signing_alg_values_supported"], ["EdDSA", "ES256"])

    def test_cors(self) -> None:
        for path in (OAUTH, OIDC):
            result = self.h.get(path, headers={"Origin": "http://localhost:6274"})
            self.assertEqual(result.header("access-control-allow-origin"), "*")
            preflight = self.h.request(
                "OPTIONS",
                path,
                headers={
                    "Origin": "http://localhost:6274",
                    "Access-Control-Request-Method": "GET",
                    "Access-Control-Request-Headers": "mcp-protocol-version",
                },
            )
            self.assertEqual(preflight.code, 204)
            self.assertEqual(preflight.header("access-control-allow-origin"), "*")
            self.assertIn("GET", preflight.header("access-control-allow-methods") or "")
            self.assertIn(
                "mcp-protocol-version",
                (preflight.header("access-control-allow-headers") or "").lower(),
            )

    def test_no_path_variants_without_issuer_path(self) -> None:
        self.assertEqual(metadata_paths("https://a.example"), ([OAUTH], [OIDC]))
        self.assertEqual(self.h.get(OAUTH + "/tenant").code, 404)


class IssuerPathTests(SynchronousTestCase):
    def test_path_inserted_variants(self) -> None:
        self.assertEqual(
            metadata_paths("https://a.example/tenant/one"),
            (
                [OAUTH, OAUTH + "/tenant/one"],
                [OIDC, OIDC + "/tenant/one", "/tenant/one" + OIDC],
            ),
        )
        h = AuthServerHarness({"auth_server": {"issuer": "http://127.0.0.1:8080/tenant"}})
        for path in (OAUTH, OAUTH + "/tenant", OIDC, OIDC + "/tenant", "/tenant" + OIDC):
            result = h.get(path)
            self.assertEqual(result.code, 200, path)
            self.assertEqual(result.json()["issuer"], "http://127.0.0.1:8080/tenant", path)
        self.assertIn("subject_types_supported", h.get(OIDC + "/tenant").json())
        self.assertNotIn("subject_types_supported", h.get(OAUTH + "/tenant").json())
