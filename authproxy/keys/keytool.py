"""``authproxy keys`` (alias ``authproxy-keys``): create signing keys and HMAC secrets.

    authproxy keys generate --type ec-p256 /etc/authproxy/keys/key-1.pem
    authproxy keys generate-hmac /etc/authproxy/hmac/hmac-1
    authproxy keys jwks /etc/authproxy/keys

Keys are written as unencrypted PKCS#8 PEM. An HMAC secret is 48 random bytes written as
base64url text (64 ASCII characters and a newline): authproxy uses the file's bytes as they
are, whitespace trimmed, so the secret is those 64 characters, which survive copy-and-paste and
``kubectl create secret --from-file`` unchanged. Files are created with mode 0400 and never
overwritten.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import sys
from collections.abc import Callable, Sequence
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from authproxy.keys.ring import KeyFileError, KeyRing, KeySources, load_key_set, load_signing_key

KEY_TYPES: dict[str, Callable[[], Any]] = {
    "ec-p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ec-p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "ec-p521": lambda: ec.generate_private_key(ec.SECP521R1()),
    "rsa-2048": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "rsa-3072": lambda: rsa.generate_private_key(public_exponent=65537, key_size=3072),
    "rsa-4096": lambda: rsa.generate_private_key(public_exponent=65537, key_size=4096),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
}

HMAC_RANDOM_BYTES = 48


class ToolError(Exception):
    """A failure reported to the operator as one line, exit status 1."""


def write_new_file(path: str, data: bytes) -> None:
    """Create ``path`` with mode 0400 and write ``data``; refuse to overwrite anything."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    except FileExistsError:
        raise ToolError(f"{path} already exists; refusing to overwrite it") from None
    except OSError as e:
        raise ToolError(f"cannot create {path}: {e.strerror}") from None
    try:
        # The umask may only have removed bits; make the mode exact.
        os.fchmod(fd, 0o400)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError as e:
        os.close(fd)
        os.unlink(path)
        raise ToolError(f"cannot write {path}: {e.strerror}") from None
    os.close(fd)


def generate_key_pem(key_type: str) -> bytes:
    """A new private key of ``key_type`` (one of KEY_TYPES) as PKCS#8 PEM."""
    key = KEY_TYPES[key_type]()
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def generate_hmac_text() -> bytes:
    """48 random bytes as base64url text with a trailing newline (64 bytes once trimmed)."""
    raw = secrets.token_bytes(HMAC_RANDOM_BYTES)
    return base64.urlsafe_b64encode(raw).rstrip(b"=") + b"\n"


def _generate(args: argparse.Namespace) -> None:
    write_new_file(args.path, generate_key_pem(args.type))
    key = load_signing_key(args.path)
    print(f"wrote {key.alg} key kid={key.kid} to {args.path}")


def _generate_hmac(args: argparse.Namespace) -> None:
    write_new_file(args.path, generate_hmac_text())
    print(f"wrote HMAC secret to {args.path}")


def _jwks(args: argparse.Namespace) -> None:
    paths: list[str] = args.paths
    if len(paths) == 1 and os.path.isdir(paths[0]):
        sources = KeySources(signing_keys_dir=paths[0], hmac_secret_files=())
    else:
        sources = KeySources(signing_key_files=tuple(paths))
    keyset = load_key_set(sources)
    for warning in keyset.warnings:
        if "HMAC" not in warning:
            print(f"warning: {warning}", file=sys.stderr)
    print(json.dumps(KeyRing(keyset).jwks(), indent=2))


def build_parser(prog: str = "authproxy-keys") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Create authproxy signing keys and HMAC secrets."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write a new private signing key (PKCS#8 PEM)")
    gen.add_argument("--type", choices=sorted(KEY_TYPES), default="ec-p256")
    gen.add_argument("path")
    gen.set_defaults(func=_generate)
    hm = sub.add_parser("generate-hmac", help="write a new HMAC secret")
    hm.add_argument("path")
    hm.set_defaults(func=_generate_hmac)
    jw = sub.add_parser("jwks", help="print the JWKS of a key directory or key files")
    jw.add_argument("paths", nargs="+", metavar="DIR_OR_FILE")
    jw.set_defaults(func=_jwks)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "authproxy-keys") -> int:
    """Entry point of ``authproxy keys`` and of its alias, the ``authproxy-keys`` console
    script; returns the exit status."""
    args = build_parser(prog).parse_args(argv)
    try:
        args.func(args)
    except (ToolError, KeyFileError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
