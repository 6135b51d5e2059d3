"""Tests for authproxy.keys.ring and authproxy.authserver.jwks."""

from __future__ import annotations

import json
import os

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwcrypto import jwt
from treq.testing import StubTreq
from twisted.internet.defer import ensureDeferred
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from authproxy.authserver.jwks import JWKSResource
from authproxy.keys.ring import (
    PRIVATE_MEMBERS,
    KeyFileError,
    KeyRing,
    KeySet,
    KeySources,
    load_hmac_secret,
    load_key_set,
    load_signing_key,
    permission_warning,
)

TRADITIONAL = serialization.PrivateFormat.TraditionalOpenSSL
PKCS8 = serialization.PrivateFormat.PKCS8


def pem(key, fmt=PKCS8) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def write(path: str, data: bytes, mode: int = 0o600) -> str:
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    return path


def ec_pem(curve=ec.SECP256R1, fmt=PKCS8) -> bytes:
    return pem(ec.generate_private_key(curve()), fmt)


class LoadSigningKeyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = self.mktemp()
        os.makedirs(self.dir)

    def path(self, name: str = "key-0.pem") -> str:
        return os.path.join(self.dir, name)

    def assertLoads(self, data: bytes, alg: str, kty: str) -> None:
        key = load_signing_key(write(self.path(), data))
        self.assertEqual(key.alg, alg)
        self.assertEqual(key.source, self.path())
        self.assertEqual(key.kid, key.jwk.thumbprint())
        public = key.public_jwk()
        self.assertEqual(public["kty"], kty)
        self.assertEqual((public["kid"], public["alg"], public["use"]), (key.kid, alg, "sig"))
        self.assertFalse(PRIVATE_MEMBERS & set(public))

    def test_rsa_pkcs1(self) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        data = pem(key, TRADITIONAL)
        self.assertIn(b"BEGIN RSA PRIVATE KEY", data)
        self.assertLoads(data, "RS256", "RSA")

    def test_rsa_pkcs8(self) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
        self.assertLoads(pem(key), "RS256", "RSA")

    def test_ec_sec1_and_pkcs8(self) -> None:
        for curve, alg in [
            (ec.SECP256R1, "ES256"),
            (ec.SECP384R1, "ES384"),
            (ec.SECP521R1, "ES512"),
        ]:
            for fmt in (TRADITIONAL, PKCS8):
                data = ec_pem(curve, fmt)
                if fmt is TRADITIONAL:
                    self.assertIn(b"BEGIN EC PRIVATE KEY", data)
                self.assertLoads(data, alg, "EC")

    def test_ed25519_pkcs8(self) -> None:
        self.assertLoads(pem(ed25519.Ed25519PrivateKey.generate()), "EdDSA", "OKP")

    def assertRefused(self, data: bytes | None, reason_part: str) -> KeyFileError:
        path = self.path()
        if data is not None:
            write(path, data)
        e = self.assertRaises(KeyFileError, load_signing_key, path)
        self.assertEqual(e.path, path)
        self.assertIn(reason_part, e.reason)
        self.assertTrue(str(e).startswith(path + ": "))
        return e

    def test_rsa_1024_refused(self) -> None:
        data = pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))
        self.assertRefused(data, "1024 bits")

    def test_p192_refused(self) -> None:
        self.assertRefused(ec_pem(ec.SECP192R1, TRADITIONAL), "secp192r1")

    def test_garbage_refused_without_content(self) -> None:
        e = self.assertRefused(b"SECRET-GARBAGE-CONTENT", "not a PEM private key")
        self.assertNotIn("SECRET-GARBAGE", str(e))

    def test_empty_refused(self) -> None:
        self.assertRefused(b"", "empty")
        self.assertRefused(b"  \n", "empty")

    def test_missing_refused(self) -> None:
        self.assertRefused(None, "not found")

    def test_public_key_refused(self) -> None:
        public = (
            ec.generate_private_key(ec.SECP256R1())
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        self.assertRefused(public, "not a PEM private key")

    def test_encrypted_refused(self) -> None:
        data = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
        self.assertRefused(data, "encrypted")


class LoadHMACSecretTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "hmac-0")

    def test_whitespace_trimmed(self) -> None:
        write(self.path, b"\n  " + b"x" * 32 + b" \n")
        self.assertEqual(load_hmac_secret(self.path), b"x" * 32)

    def test_raw_bytes(self) -> None:
        secret = bytes(range(1, 33)) + b"\xff\x00\x80"
        write(self.path, secret)
        self.assertEqual(load_hmac_secret(self.path), secret)

    def test_short_refused(self) -> None:
        write(self.path, b"short-secret-content  \n")
        e = self.assertRaises(KeyFileError, load_hmac_secret, self.path)
        self.assertIn("at least 32", e.reason)
        self.assertNotIn("short-secret-content", str(e))

    def test_empty_and_missing_refused(self) -> None:
        e = self.assertRaises(KeyFileError, load_hmac_secret, self.path)
        self.assertIn("not found", e.reason)
        write(self.path, b"\n")
        e = self.assertRaises(KeyFileError, load_hmac_secret, self.path)
        self.assertIn("empty", e.reason)


class FakeAuthServerConfig:
    signing_keys_dir = "/k"
    hmac_secrets_dir = None
    signing_key_files: tuple[str, ...] = ()
    hmac_secret_files = ("/h/a", "/h/b")


class KeySourcesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = self.mktemp()
        os.makedirs(self.dir)

    def test_from_config(self) -> None:
        sources = KeySources.from_config(FakeAuthServerConfig())
        self.assertEqual(
            sources,
            KeySources(signing_keys_dir="/k", hmac_secret_files=("/h/a", "/h/b")),
        )

    def test_from_real_config(self) -> None:
        from authproxy.config import validate_config

        # validation only: the startup check would read (and refuse) the missing files
        config = validate_config(
            {
                "server": {"public_url": "http://127.0.0.1:8080"},
                "backend": {"url": "http://127.0.0.1:9000"},
                "upstream": {"type": "development"},
                "auth_server": {"signing_keys_dir": "/k", "hmac_secret_files": ["/h/a"]},
            }
        )
        sources = KeySources.from_config(config.auth_server)
        self.assertEqual(sources, KeySources(signing_keys_dir="/k", hmac_secret_files=("/h/a",)))

    def test_numeric_order_and_ignored_names(self) -> None:
        for name in [
            "key-10.pem",
            "key-9.pem",
            "key-0.pem",
            "key-2.pem",
            "..data",
            "..2026_11_27_10_00_00.123",
            "key-x.pem",
            "key-1.pem.bak",
            "hmac-0",
            "README",
        ]:
            write(os.path.join(self.dir, name), b"")
        for name in ["hmac-10", "hmac-2", "hmac-1"]:
            write(os.path.join(self.dir, name), b"")
        sources = KeySources(signing_keys_dir=self.dir, hmac_secrets_dir=self.dir)
        names = [os.path.basename(p) for p in sources.signing_files()]
        self.assertEqual(names, ["key-0.pem", "key-2.pem", "key-9.pem", "key-10.pem"])
        names = [os.path.basename(p) for p in sources.hmac_files()]
        self.assertEqual(names, ["hmac-0", "hmac-1", "hmac-2", "hmac-10"])

    def test_empty_or_missing_dir(self) -> None:
        e = self.assertRaises(KeyFileError, KeySources(signing_keys_dir=self.dir).signing_files)
        self.assertIn("key-N.pem", e.reason)
        missing = os.path.join(self.dir, "nope")
        e = self.assertRaises(KeyFileError, KeySources(hmac_secrets_dir=missing).hmac_files)
        self.assertEqual(e.path, missing)

    def test_watch_dirs(self) -> None:
        sources = KeySources(
            signing_keys_dir="/a/keys",
            signing_key_files=("/b/one.pem",),
            hmac_secret_files=("/b/two", "/c/three"),
        )
        self.assertEqual(sources.watch_dirs(), ("/a/keys", "/b", "/c"))


def make_key_dir(base: str, keys: list[bytes], secrets: list[bytes], mode: int = 0o600):
    keys_dir = os.path.join(base, "keys")
    hmac_dir = os.path.join(base, "hmac")
    os.makedirs(keys_dir)
    os.makedirs(hmac_dir)
    for i, data in enumerate(keys):
        write(os.path.join(keys_dir, f"key-{i}.pem"), data, mode)
    for i, data in enumerate(secrets):
        write(os.path.join(hmac_dir, f"hmac-{i}"), data, mode)
    return KeySources(signing_keys_dir=keys_dir, hmac_secrets_dir=hmac_dir)


class LoadKeySetTests(SynchronousTestCase):
    def test_loads_all_in_order(self) -> None:
        keys = [ec_pem(), pem(ed25519.Ed25519PrivateKey.generate())]
        sources = make_key_dir(self.mktemp(), keys, [b"a" * 32, b"b" * 40])
        keyset = load_key_set(sources)
        self.assertEqual([k.alg for k in keyset.signing_keys], ["ES256", "EdDSA"])
        self.assertEqual(keyset.hmac_secrets, (b"a" * 32, b"b" * 40))
        self.assertEqual(keyset.warnings, ())
        self.assertNotIn("aaaa", repr(keyset))

    def test_first_bad_file_raises(self) -> None:
        sources = make_key_dir(self.mktemp(), [ec_pem(), b"garbage"], [b"a" * 32])
        e = self.assertRaises(KeyFileError, load_key_set, sources)
        self.assertTrue(e.path.endswith("key-1.pem"))

    def test_others_readable_warning(self) -> None:
        sources = make_key_dir(self.mktemp(), [ec_pem()], [b"a" * 32], mode=0o604)
        keyset = load_key_set(sources)
        self.assertEqual(len(keyset.warnings), 2)
        self.assertIn("key-0.pem", keyset.warnings[0])
        self.assertIn("group or others", keyset.warnings[0])
        self.assertIn("0604", keyset.warnings[0])
        self.assertIn("hmac-0", keyset.warnings[1])

    def test_readable_by_own_group_is_quiet(self) -> None:
        # Kubernetes with fsGroup: a 0400 Secret arrives as 0440, group = the pod's fsGroup.
        sources = make_key_dir(self.mktemp(), [ec_pem()], [b"a" * 32], mode=0o440)
        self.assertEqual(load_key_set(sources).warnings, ())

    def test_readable_by_another_group_warns(self) -> None:
        path = write(os.path.join(self.mktemp() + "-key"), b"x", 0o440)
        gid = os.stat(path).st_gid
        warning = permission_warning(path, own_groups={gid + 1})
        self.assertIsNotNone(warning)
        self.assertIn("0440", str(warning))
        self.assertIsNone(permission_warning(path, own_groups={gid}))
        os.chmod(path, 0o400)
        self.assertIsNone(permission_warning(path, own_groups=set()))

    def test_nothing_configured_is_ephemeral(self) -> None:
        keyset = load_key_set(KeySources())
        self.assertEqual(len(keyset.signing_keys), 1)
        self.assertEqual(keyset.signing_keys[0].alg, "ES256")
        self.assertEqual(keyset.signing_keys[0].source, "ephemeral")
        self.assertEqual(len(keyset.hmac_secrets[0]), 32)
        self.assertEqual(len(keyset.warnings), 2)
        for w in keyset.warnings:
            self.assertIn("tokens will not survive a restart", w)
        # A reload keeps the ephemeral parts instead of silently replacing them.
        again = load_key_set(KeySources(), previous=keyset)
        self.assertTrue(again.same_keys(keyset))
        self.assertFalse(load_key_set(KeySources()).same_keys(keyset))


class KeyRingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.base = self.mktemp()
        self.ed = pem(ed25519.Ed25519PrivateKey.generate())
        self.rsa = pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        self.ec = ec_pem(ec.SECP384R1)
        # key-3 duplicates key-0: the JWKS lists it once.
        self.sources = make_key_dir(
            self.base, [self.ec, self.rsa, self.ed, self.ec], [b"s" * 32, b"t" * 32]
        )
        self.ring = KeyRing(load_key_set(self.sources))

    def test_accessors(self) -> None:
        ring = self.ring
        self.assertEqual(ring.active_signing_key.alg, "ES384")
        self.assertEqual(len(ring.signing_keys), 4)
        self.assertIs(ring.key_for_kid(ring.signing_keys[1].kid), ring.signing_keys[1])
        self.assertIsNone(ring.key_for_kid("nope"))
        self.assertEqual(ring.active_hmac_secret, b"s" * 32)
        self.assertEqual(ring.hmac_secrets, (b"s" * 32, b"t" * 32))
        self.assertEqual(ring.generation, 0)

    def test_jwks_content_and_order(self) -> None:
        jwks = self.ring.jwks()
        keys = jwks["keys"]
        self.assertEqual([k["alg"] for k in keys], ["ES384", "RS256", "EdDSA"])
        self.assertEqual([k["kid"] for k in keys], [k.kid for k in self.ring.signing_keys[:3]])
        for k in keys:
            self.assertEqual(k["use"], "sig")
            self.assertFalse(PRIVATE_MEMBERS & set(k), k)
        self.assertEqual(set(keys[1]), {"kty", "n", "e", "kid", "alg", "use"})
        self.assertEqual(json.loads(self.ring.jwks_json()), jwks)

    def test_replace_bumps_generation(self) -> None:
        before = self.ring.jwks_json()
        self.ring.replace(load_key_set(KeySources()))
        self.assertEqual(self.ring.generation, 1)
        self.assertNotEqual(self.ring.jwks_json(), before)
        self.assertEqual(len(self.ring.jwks()["keys"]), 1)
        self.ring.replace(load_key_set(KeySources()))
        self.assertEqual(self.ring.generation, 2)

    def test_load_logs_warnings(self) -> None:
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        ring = KeyRing.load(KeySources())
        self.assertEqual(ring.active_signing_key.source, "ephemeral")
        warnings = [e for e in events if e.get("log_level") == LogLevel.warn]
        self.assertEqual(len(warnings), 2)
        self.assertIn("will not survive a restart", warnings[0]["problem"])

    def test_keyset_requires_keys(self) -> None:
        self.assertRaises(ValueError, KeyRing, KeySet(signing_keys=(), hmac_secrets=(b"x",)))


class RotationTests(SynchronousTestCase):
    """A token signed with key-0 verifies while its key is anywhere in the ring."""

    def test_old_key_verifies_until_removed(self) -> None:
        base = self.mktemp()
        old, new = ec_pem(), pem(ed25519.Ed25519PrivateKey.generate())
        sources = make_key_dir(base, [old], [b"s" * 32])
        ring = KeyRing(load_key_set(sources))
        signer = ring.active_signing_key
        token = jwt.JWT(header={"alg": signer.alg, "kid": signer.kid}, claims={"sub": "alice"})
        token.make_signed_token(signer.jwk)
        serialized = token.serialize()

        def verify() -> bool:
            kid = jwt.JWT(jwt=serialized).token.jose_header["kid"]
            key = ring.key_for_kid(kid)
            if key is None:
                return False
            checked = jwt.JWT(jwt=serialized, key=key.jwk, algs=[key.alg])
            return json.loads(checked.claims)["sub"] == "alice"

        self.assertTrue(verify())
        # Promote a new key-0; the old key becomes key-1 (verify only).
        write(os.path.join(base, "keys", "key-1.pem"), old)
        write(os.path.join(base, "keys", "key-0.pem"), new)
        ring.replace(load_key_set(sources))
        self.assertEqual(ring.active_signing_key.alg, "EdDSA")
        self.assertTrue(verify())
        # Retire the old key.
        os.unlink(os.path.join(base, "keys", "key-1.pem"))
        ring.replace(load_key_set(sources))
        self.assertFalse(verify())


class JWKSResourceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.ring = KeyRing(load_key_set(KeySources()))
        root = Resource()
        wk = Resource()
        root.putChild(b".well-known", wk)
        wk.putChild(b"jwks.json", JWKSResource(self.ring))
        self.treq = StubTreq(root)

    def get(self, headers=None):
        d = ensureDeferred(self._get(headers))
        self.treq.flush()
        return self.successResultOf(d)

    async def _get(self, headers):
        response = await self.treq.get("http://x/.well-known/jwks.json", headers=headers)
        return response, await response.content()

    def test_serves_jwks(self) -> None:
        response, body = self.get()
        self.assertEqual(response.code, 200)
        h = response.headers
        self.assertEqual(h.getRawHeaders("content-type"), ["application/json"])
        self.assertEqual(h.getRawHeaders("access-control-allow-origin"), ["*"])
        self.assertEqual(h.getRawHeaders("cache-control"), ["public, max-age=300"])
        self.assertEqual(json.loads(body), self.ring.jwks())

    def test_follows_replace_and_etag(self) -> None:
        response, _ = self.get()
        etag = response.headers.getRawHeaders("etag")[0]
        response, body = self.get({"If-None-Match": etag})
        self.assertEqual(response.code, 304)
        self.ring.replace(load_key_set(KeySources()))
        response, body = self.get({"If-None-Match": etag})
        self.assertEqual(response.code, 200)
        self.assertEqual(json.loads(body), self.ring.jwks())
