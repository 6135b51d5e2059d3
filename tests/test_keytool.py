"""Tests for authproxy.keys.keytool (the ``authproxy-keys`` command)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat

from twisted.trial.unittest import SynchronousTestCase

from authproxy.keys.keytool import KEY_TYPES, main
from authproxy.keys.ring import KeySources, load_hmac_secret, load_key_set, load_signing_key


class KeytoolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = self.mktemp()
        os.makedirs(self.dir)

    def run_main(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(argv))
        return code, out.getvalue(), err.getvalue()

    def assertMode0400(self, path: str) -> None:
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o400)

    def test_generate_every_type(self) -> None:
        expected = {
            "ec-p256": "ES256",
            "ec-p384": "ES384",
            "ec-p521": "ES512",
            "rsa-2048": "RS256",
            "rsa-3072": "RS256",
            "rsa-4096": "RS256",
            "ed25519": "EdDSA",
        }
        self.assertEqual(set(KEY_TYPES), set(expected))
        for key_type, alg in expected.items():
            path = os.path.join(self.dir, f"{key_type}.pem")
            code, out, err = self.run_main("generate", "--type", key_type, path)
            self.assertEqual((code, err), (0, ""))
            self.assertMode0400(path)
            with open(path, "rb") as f:
                self.assertTrue(f.read().startswith(b"-----BEGIN PRIVATE KEY-----"))
            key = load_signing_key(path)
            self.assertEqual(key.alg, alg)
            self.assertIn(key.kid, out)

    def test_generate_hmac(self) -> None:
        path = os.path.join(self.dir, "hmac-0")
        code, out, err = self.run_main("generate-hmac", path)
        self.assertEqual(code, 0)
        self.assertMode0400(path)
        secret = load_hmac_secret(path)
        self.assertEqual(len(secret), 64)
        self.assertNotIn(secret.decode(), out)
        other = os.path.join(self.dir, "hmac-1")
        self.run_main("generate-hmac", other)
        self.assertNotEqual(load_hmac_secret(other), secret)

    def test_refuses_overwrite(self) -> None:
        path = os.path.join(self.dir, "key-0.pem")
        self.assertEqual(self.run_main("generate", "--type", "ec-p256", path)[0], 0)
        with open(path, "rb") as f:
            before = f.read()
        code, out, err = self.run_main("generate", "--type", "ed25519", path)
        self.assertEqual(code, 1)
        self.assertIn(path, err)
        self.assertIn("refusing to overwrite", err)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), before)
        code, _, err = self.run_main("generate-hmac", path)
        self.assertEqual(code, 1)
        self.assertIn("refusing to overwrite", err)

    def test_missing_directory(self) -> None:
        path = os.path.join(self.dir, "nope", "key-0.pem")
        code, _, err = self.run_main("generate", path)
        self.assertEqual(code, 1)
        self.assertIn("cannot create", err)

    def test_generated_dir_loads_and_jwks(self) -> None:
        self.run_main("generate", "--type", "ec-p384", os.path.join(self.dir, "key-0.pem"))
        self.run_main("generate", "--type", "rsa-2048", os.path.join(self.dir, "key-1.pem"))
        keyset = load_key_set(KeySources(signing_keys_dir=self.dir))
        # 0400 files raise no permission warnings; only the ephemeral-HMAC one remains.
        self.assertEqual(len(keyset.warnings), 1)
        code, out, err = self.run_main("jwks", self.dir)
        self.assertEqual((code, err), (0, ""))
        jwks = json.loads(out)
        self.assertEqual([k["alg"] for k in jwks["keys"]], ["ES384", "RS256"])
        self.assertNotIn("d", jwks["keys"][0])

    def test_jwks_reports_bad_file(self) -> None:
        path = os.path.join(self.dir, "key-0.pem")
        with open(path, "wb") as f:
            f.write(b"garbage")
        code, _, err = self.run_main("jwks", self.dir)
        self.assertEqual(code, 1)
        self.assertIn(path, err)
