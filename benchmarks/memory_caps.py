"""Worst-case memory of the memory storage at its caps: every record at its maximum field sizes.

Fills each collection of a fresh memory storage with ``--sample`` maximal records (distinct
strings, so nothing is shared), measures the allocation with tracemalloc (records, their
copies, dict and heap entries and the fairness indexes) and scales to the default cap.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/memory_caps.py [--sample 5000] [--config FILE]

Field sizes: what registration and authorize accept (register.py's limits, the client's
``state``, a redirect URI); what the upstream IdP hands back is assumed (``IDP`` below):
it is not chosen by an attacker, but every login stores it.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tracemalloc
from collections.abc import Callable
from typing import Any

from twisted.internet.task import Clock

from authproxy.authserver import limits
from authproxy.config import Config, config_from_mapping, load_config
from authproxy.keys.ring import KeyRing, KeySources
from authproxy.storage import Storage
from authproxy.storage.memory import memory_storage
from authproxy.storage.models import (
    AuthorizationCode,
    PendingAuthorization,
    RefreshToken,
    RegisteredClient,
    TokenFamily,
    UpstreamTokenSession,
)
from authproxy.tokens import REFRESH_TOKEN, AccessTokenIssuer, OpaqueTokens

URI = limits.MAX_REDIRECT_URI_LENGTH
URIS = limits.MAX_REDIRECT_URIS
NAME = limits.MAX_CLIENT_NAME
CONTACTS = limits.MAX_CONTACTS
CONTACT = limits.MAX_CONTACT_LENGTH
METADATA_URIS = ("client_uri", "logo_uri", "tos_uri", "policy_uri")
METADATA_STRINGS = ("software_id", "software_version")
CLIENT_STATE = limits.MAX_CLIENT_STATE
RESOURCE = 256  # a configured audience
NAME_CLAIM = 256  # name and email from the IdP, copied into codes, refresh and access tokens
IDP = {"access_token": 4096, "refresh_token": 1024, "id_token": 4096, "claims": 1024}
START = 1_700_000_000.0


def text(n: int, i: int, tag: str) -> str:
    """A distinct string of exactly n characters."""
    head = f"{tag}{i}-"
    return (head + "x" * n)[:n]


def client(i: int) -> RegisteredClient:
    return RegisteredClient(
        client_id=text(32, i, "c"),
        redirect_uris=tuple(text(URI, i * 100 + k, "https://a/") for k in range(URIS)),
        grant_types=("authorization_code", "refresh_token"),
        response_types=("code",),
        scopes=("openid", "profile", "email", "offline_access"),
        client_name=text(NAME, i, "n"),
        token_endpoint_auth_method="none",
        created_at=START,
        extra_metadata={
            **{f: text(limits.MAX_METADATA_URI_LENGTH, i, f) for f in METADATA_URIS},
            **{f: text(limits.MAX_METADATA_STRING, i, f) for f in METADATA_STRINGS},
            "contacts": [text(CONTACT, i * 100 + k, "m") for k in range(CONTACTS)],
        },
        owner=text(39, i, "2001:db8:"),
    )


def pending(i: int) -> PendingAuthorization:
    return PendingAuthorization(
        state=text(43, i, "s"),
        client_id=text(32, i, "c"),
        redirect_uri=text(URI, i, "https://a/"),
        client_state=text(CLIENT_STATE, i, "cs"),
        code_challenge=text(43, i, "ch"),
        code_challenge_method="S256",
        scopes=("openid", "profile", "email", "offline_access"),
        resource=text(RESOURCE, i, "https://r/"),
        created_at=START,
        expires_at=START + 600,
        upstream_code_verifier=text(43, i, "v"),
        upstream_nonce=text(43, i, "no"),
        csrf_token=text(43, i, "csrf"),
        owner=text(39, i, "2001:db8:"),
    )


def code(i: int) -> AuthorizationCode:
    return AuthorizationCode(
        code_id=text(43, i, "k"),
        client_id=text(32, i, "c"),
        redirect_uri=text(URI, i, "https://a/"),
        code_challenge=text(43, i, "ch"),
        scopes=("openid", "profile", "email", "offline_access"),
        resource=text(RESOURCE, i, "https://r/"),
        user_id=text(22, i, "u"),
        tsid=text(43, i, "t"),
        created_at=START,
        expires_at=START + 300,
        family_id=text(22, i, "f"),
        name=text(NAME_CLAIM, i, "name"),
        email=text(NAME_CLAIM, i, "email"),
    )


def successor_response() -> dict[str, object]:
    """A real sealed token response (what a rotated refresh token keeps for the retry grace)."""
    ring = KeyRing.load(KeySources())
    clock = Clock()
    clock.advance(START)
    issuer = AccessTokenIssuer(ring=ring, clock=clock, issuer="https://" + "i" * 60)
    opaque = OpaqueTokens(ring=ring)
    access = issuer.issue(
        subject="u" * 22,
        audience=text(RESOURCE, 0, "https://r/"),
        client_id="c" * 32,
        scopes=("openid", "profile", "email", "offline_access"),
        tsid="t" * 43,
        lifespan=900,
        name="n" * NAME_CLAIM,
        email="e" * NAME_CLAIM,
    )
    old, _ = opaque.mint(REFRESH_TOKEN)
    new, _ = opaque.mint(REFRESH_TOKEN)
    response = {
        "access_token": access.token,
        "token_type": "Bearer",
        "expires_in": 900,
        "scope": "openid profile email offline_access",
        "refresh_token": new,
    }
    return opaque.seal(old, REFRESH_TOKEN, response)


SEALED = successor_response()


def refresh_token(i: int) -> RefreshToken:
    return RefreshToken(
        token_id=text(43, i, "r"),
        family_id=text(22, i, "f"),
        client_id=text(32, i, "c"),
        user_id=text(22, i, "u"),
        scopes=("openid", "profile", "email", "offline_access"),
        resource=text(RESOURCE, i, "https://r/"),
        tsid=text(43, i, "t"),
        created_at=START,
        expires_at=START + 7 * 86400,
        rotated_at=START,
        # distinct copies, as each rotation seals its own
        successor_response={k: text(len(str(v)), i, "z") for k, v in SEALED.items()},
        name=text(NAME_CLAIM, i, "name"),
        email=text(NAME_CLAIM, i, "email"),
    )


def family(i: int) -> TokenFamily:
    return TokenFamily(
        family_id=text(22, i, "f"),
        client_id=text(32, i, "c"),
        user_id=text(22, i, "u"),
        tsid=text(43, i, "t"),
        expires_at=START + 7 * 86400,
        # two live access tokens (one refresh within an access-token lifespan)
        access_token_jtis=((text(22, i, "j"), START + 900), (text(22, i, "J"), START + 900)),
    )


def session(i: int) -> UpstreamTokenSession:
    return UpstreamTokenSession(
        tsid=text(43, i, "t"),
        upstream_name="okta",
        access_token=text(IDP["access_token"], i, "a"),
        refresh_token=text(IDP["refresh_token"], i, "r"),
        access_token_expires_at=START + 3600,
        expires_at=START + 7 * 86400,
        subject=text(64, i, "sub"),
        claims={"groups": [text(IDP["claims"], i, "g")], "email": text(NAME_CLAIM, i, "e")},
        id_token=text(IDP["id_token"], i, "id"),
    )


def fillers(storage: Storage) -> dict[str, Callable[[int], Any]]:
    return {
        "clients": lambda i: storage.clients.add_client(client(i)),
        "pending": lambda i: storage.logins.put_pending(pending(i)),
        "codes": lambda i: storage.codes.put_code(code(i)),
        "refresh_tokens": lambda i: storage.families.put_refresh_token(refresh_token(i)),
        "families": lambda i: storage.families.put_family(family(i)),
        "upstream_sessions": lambda i: storage.upstream_sessions.put_upstream_session(session(i)),
        "users": lambda i: storage.users.user_id_for("okta", text(64, i, "sub")),
        "revoked_jtis": lambda i: storage.revocations.revoke_jti(text(22, i, "j"), START + 900),
    }


def bytes_per_record(collection: str, sample: int) -> float:
    clock = Clock()
    clock.advance(START)
    storage = memory_storage(clock)
    fill = fillers(storage)[collection]
    fill(-1)  # containers past their first allocation
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(sample):
        fill(i)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / sample


def caps(config: Config) -> dict[str, int]:
    """The caps build_storage gives the memory storage for ``config``."""
    from authproxy.storage.factory import storage_caps

    return storage_caps(config)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sample", type=int, default=5000, help="records measured per collection")
    parser.add_argument("--config", help="a configuration file (default: the defaults)")
    args = parser.parse_args(argv)
    if args.config:
        config = load_config(args.config)
    else:
        config = config_from_mapping(
            {
                "server": {"public_url": "http://127.0.0.1:8080"},
                "backend": {"url": "http://127.0.0.1:9000"},
                "upstream": {"type": "development"},
            }
        )
    limits = caps(config)
    total = 0.0
    print(f"{'collection':<18} {'cap':>8} {'KiB/record':>11} {'MiB at cap':>11}")
    for collection, cap in limits.items():
        per = bytes_per_record(collection, min(args.sample, cap))
        mib = per * cap / 2**20
        total += mib
        print(f"{collection:<18} {cap:>8} {per / 1024:>11.2f} {mib:>11.1f}")
    print(f"{'total':<18} {'':>8} {'':>11} {total:>11.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
