"""Signing keys and HMAC secrets: loading, validation, the in-process KeyRing and its JWKS.

Files (DESIGN.md §3): ``signing_keys_dir`` holds ``key-N.pem`` and ``hmac_secrets_dir`` holds
``hmac-N``, ordered by N numerically; index 0 is active (signs / protects new values) and every
entry still verifies. ``signing_key_files`` / ``hmac_secret_files`` list files explicitly
(first = active); when both a directory and a list are configured, the directory's files come
first. Other names in a directory (Kubernetes' ``..data``, ``..2026_...`` and friends) are ignored.

Errors name the file and the reason, never the content: the content is a secret.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import stat
from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING, Any

import attrs
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwcrypto.jwk import JWK
from twisted.logger import Logger

from authproxy.keys.algorithms import signing_alg

if TYPE_CHECKING:
    from authproxy.config import AuthServerConfig

_log = Logger()

MIN_HMAC_BYTES = 32
EPHEMERAL = "ephemeral"
EPHEMERAL_WARNING = "tokens will not survive a restart"

_KEY_NAME = re.compile(r"^key-(\d+)\.pem$")
_HMAC_NAME = re.compile(r"^hmac-(\d+)$")
# Members that only a private JWK carries; the JWKS must never contain any of them.
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class KeyFileError(Exception):
    """A key or secret file is missing, unreadable, unparsable or too weak.

    ``str()`` is ``"<path>: <reason>"``; it never includes the file's content.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@attrs.frozen
class SigningKey:
    """One asymmetric signing key: its RFC 7638 ``kid``, JWS ``alg`` and private JWK."""

    kid: str
    alg: str
    jwk: JWK = attrs.field(repr=False, eq=False)
    source: str = attrs.field(eq=False)

    def public_jwk(self) -> dict[str, Any]:
        """The public members only, plus ``kid``, ``alg`` and ``use: sig``."""
        public = {k: v for k, v in self.jwk.export_public(as_dict=True).items()}
        for member in PRIVATE_MEMBERS:
            public.pop(member, None)
        public.update(kid=self.kid, alg=self.alg, use="sig")
        return public

    @classmethod
    def from_private_key(cls, key: Any, source: str) -> SigningKey:
        """Wrap a ``cryptography`` private key object; raises ValueError if not acceptable."""
        alg = signing_alg(key)
        jwk = JWK.from_pyca(key)
        kid = jwk.thumbprint()
        # Carry kid/alg/use on the JWK itself so signers can put kid in the JWS header.
        jwk = JWK(**{**jwk.export_private(as_dict=True), "kid": kid, "alg": alg, "use": "sig"})
        return cls(kid=kid, alg=alg, jwk=jwk, source=source)


# Key and secret files are a few KiB; a bigger file is a mistake, not a key.
MAX_KEY_FILE_BYTES = 1024 * 1024

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _not_regular(mode: int) -> str | None:
    """None for a regular file, else why the entry is not one ("not a regular file (a FIFO)")."""
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _KINDS if test(mode)), "a special file")
    return f"not a regular file ({kind})"


def _read(path: str, what: str) -> bytes:
    """The content of the regular file at ``path`` (symlinks followed), without ever blocking.

    A FIFO opened for reading waits for a writer forever, freezing the reactor: O_NONBLOCK
    makes ``open`` return at once, and the type is checked on the opened descriptor, not on
    a earlier ``stat`` of the path that could be swapped in between.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KeyFileError(path, f"{what} file not found") from None
    except PermissionError:
        raise KeyFileError(path, "permission denied") from None
    except OSError as e:
        raise KeyFileError(path, f"cannot read: {e.strerror}") from None
    try:
        problem = _not_regular(os.fstat(fd).st_mode)
        if problem is not None:
            raise KeyFileError(path, f"{problem}, not a {what} file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as e:
        raise KeyFileError(path, f"cannot read: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(path, f"larger than {MAX_KEY_FILE_BYTES} bytes, not a {what} file")
    return data


def load_signing_key(path: str) -> SigningKey:
    """Load one PEM private key (PKCS#1 RSA, SEC1 EC, or PKCS#8 RSA/EC/Ed25519).

    Raises KeyFileError naming the file and the reason.
    """
    data = _read(path, "key")
    if not data.strip():
        raise KeyFileError(path, "file is empty")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyFileError(path, "key is encrypted; store it unencrypted (mode 0400)") from None
    except UnsupportedAlgorithm:
        raise KeyFileError(path, "unsupported key type or curve") from None
    except ValueError:
        raise KeyFileError(
            path, "not a PEM private key (expected PKCS#1 RSA, SEC1 EC or PKCS#8)"
        ) from None
    try:
        return SigningKey.from_private_key(key, source=path)
    except ValueError as e:
        raise KeyFileError(path, str(e)) from None


def load_hmac_secret(path: str) -> bytes:
    """Load one HMAC secret: the file's raw bytes without surrounding whitespace, >= 32 bytes."""
    data = _read(path, "secret").strip()
    if not data:
        raise KeyFileError(path, "file is empty")
    if len(data) < MIN_HMAC_BYTES:
        raise KeyFileError(
            path,
            f"HMAC secret has {len(data)} bytes; at least {MIN_HMAC_BYTES} are required",
        )
    return data


def _numbered(directory: str, pattern: re.Pattern[str], expected: str) -> tuple[str, ...]:
    """The regular files in ``directory`` whose names match ``pattern``, in numeric order."""
    found, _ = _scan(directory, pattern, expected)
    return found


def _scan(
    directory: str, pattern: re.Pattern[str], expected: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(regular files matching ``pattern`` in numeric order, "<path>: <why>" for the others).

    Entries are checked after following symlinks (Kubernetes Secret volumes are symlinks
    through ``..data``); a FIFO, socket, device or directory with a key's name is ignored.
    """
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        raise KeyFileError(directory, "directory not found") from None
    except NotADirectoryError:
        raise KeyFileError(directory, "not a directory") from None
    except PermissionError:
        raise KeyFileError(directory, "permission denied") from None
    found = []
    ignored = []
    for name in names:
        m = pattern.match(name)
        if not m:
            continue
        path = os.path.join(directory, name)
        try:
            problem = _not_regular(os.stat(path).st_mode)
        except OSError:
            problem = None  # vanished or dangling: reading it reports the reason
        if problem is not None:
            ignored.append(f"{path}: {problem}; ignored")
            continue
        found.append((int(m.group(1)), path))
    if not found:
        raise KeyFileError(directory, f"contains no {expected} file")
    found.sort()
    return tuple(path for _, path in found), tuple(sorted(ignored))


def _str_tuple(value: Iterable[str] | None) -> tuple[str, ...]:
    return tuple(value or ())


@attrs.frozen
class KeySources:
    """Where signing keys and HMAC secrets come from (``auth_server`` config)."""

    signing_keys_dir: str | None = None
    hmac_secrets_dir: str | None = None
    signing_key_files: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    hmac_secret_files: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)

    @classmethod
    def from_config(cls, auth_server: AuthServerConfig) -> KeySources:
        """Build from an ``AuthServerConfig``."""
        return cls(
            signing_keys_dir=auth_server.signing_keys_dir,
            hmac_secrets_dir=auth_server.hmac_secrets_dir,
            signing_key_files=tuple(auth_server.signing_key_files or ()),
            hmac_secret_files=tuple(auth_server.hmac_secret_files or ()),
        )

    @property
    def signing_configured(self) -> bool:
        return bool(self.signing_keys_dir or self.signing_key_files)

    @property
    def hmac_configured(self) -> bool:
        return bool(self.hmac_secrets_dir or self.hmac_secret_files)

    def signing_files(self) -> tuple[str, ...]:
        """The signing key files in order (active first). Raises KeyFileError for a bad dir."""
        files: tuple[str, ...] = ()
        if self.signing_keys_dir:
            files = _numbered(self.signing_keys_dir, _KEY_NAME, "key-N.pem")
        return files + self.signing_key_files

    def hmac_files(self) -> tuple[str, ...]:
        """The HMAC secret files in order (active first). Raises KeyFileError for a bad dir."""
        files: tuple[str, ...] = ()
        if self.hmac_secrets_dir:
            files = _numbered(self.hmac_secrets_dir, _HMAC_NAME, "hmac-N")
        return files + self.hmac_secret_files

    def problems(self) -> list[str]:
        """Every problem with the configured directories and files, one line each.

        ``load_key_set`` stops at the first bad file; a configuration check reads them all so
        the operator sees every one at once. Each line starts with the ``auth_server`` key.
        """
        return [
            *_part_problems(
                ("signing_keys_dir", self.signing_keys_dir, _KEY_NAME, "key-N.pem"),
                ("signing_key_files", self.signing_key_files),
                load_signing_key,
            ),
            *_part_problems(
                ("hmac_secrets_dir", self.hmac_secrets_dir, _HMAC_NAME, "hmac-N"),
                ("hmac_secret_files", self.hmac_secret_files),
                load_hmac_secret,
            ),
        ]

    def ignored(self) -> tuple[str, ...]:
        """ "<path>: <why>" for each entry of the dirs named like a key but not a regular file."""
        result: list[str] = []
        for directory, pattern, expected in (
            (self.signing_keys_dir, _KEY_NAME, "key-N.pem"),
            (self.hmac_secrets_dir, _HMAC_NAME, "hmac-N"),
        ):
            if directory:
                try:
                    result.extend(_scan(directory, pattern, expected)[1])
                except KeyFileError:
                    pass  # reported by signing_files()/hmac_files()
        return tuple(result)

    def watch_dirs(self) -> tuple[str, ...]:
        """Directories whose entries decide the key set: the dirs, and parents of listed files.

        Watching directories (not files) is what catches Kubernetes' atomic ``..data`` swap.
        """
        dirs: list[str] = []
        for d in (self.signing_keys_dir, self.hmac_secrets_dir):
            if d:
                dirs.append(d)
        for f in self.signing_key_files + self.hmac_secret_files:
            dirs.append(os.path.dirname(os.path.abspath(f)))
        seen: dict[str, None] = {}
        for d in dirs:
            seen.setdefault(os.path.abspath(d), None)
        return tuple(seen)


def _part_problems(
    directory: tuple[str, str | None, re.Pattern[str], str],
    files: tuple[str, tuple[str, ...]],
    load: Callable[[str], object],
) -> list[str]:
    """The problems of one part (signing keys or HMAC secrets): its directory and its list."""
    dir_field, dir_path, pattern, expected = directory
    files_field, listed = files
    problems = []
    paths = []
    if dir_path:
        try:
            paths = [(dir_field, path) for path in _numbered(dir_path, pattern, expected)]
        except KeyFileError as e:
            problems.append(f"auth_server.{dir_field}: {e}")
    paths += [(f"{files_field}[{i}]", path) for i, path in enumerate(listed)]
    for field, path in paths:
        try:
            load(path)
        except KeyFileError as e:
            problems.append(f"auth_server.{field}: {e}")
    return problems


@attrs.frozen
class KeySet:
    """A complete, validated set of signing keys and HMAC secrets (index 0 active)."""

    signing_keys: tuple[SigningKey, ...]
    hmac_secrets: tuple[bytes, ...] = attrs.field(repr=False)
    warnings: tuple[str, ...] = ()
    # True when the HMAC secret was generated in-process because none is configured.
    hmac_ephemeral: bool = False
    # "<path>: <why>" for directory entries named like keys that are not regular files.
    ignored: tuple[str, ...] = ()

    def same_keys(self, other: KeySet | None) -> bool:
        """True if ``other`` holds the same keys and secrets in the same order."""
        if other is None:
            return False
        return (
            tuple(k.kid for k in self.signing_keys) == tuple(k.kid for k in other.signing_keys)
            and self.hmac_secrets == other.hmac_secrets
        )

    @property
    def signing_ephemeral(self) -> bool:
        return any(k.source == EPHEMERAL for k in self.signing_keys)


def generate_ephemeral_key() -> SigningKey:
    """A fresh ES256 key that lives only in this process."""
    return SigningKey.from_private_key(ec.generate_private_key(ec.SECP256R1()), source=EPHEMERAL)


def permission_warning(path: str, own_groups: Collection[int] | None = None) -> str | None:
    """Why ``path`` is readable by more than this process, or None.

    Others may not read it at all. Its group may, when that group is one of the process's
    own (``own_groups``; default: its effective and supplementary groups): Kubernetes mounts
    Secrets group-readable for the pod's ``fsGroup`` even with ``defaultMode: 0400``, and
    that group is the process's own, so nobody else gains access.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    if own_groups is None:
        own_groups = {os.getegid(), *os.getgroups()}
    if st.st_mode & stat.S_IRWXO or (st.st_mode & stat.S_IRWXG and st.st_gid not in own_groups):
        return (
            f"{path} is readable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
            "restrict it to the owner (chmod 0400) or to authproxy's own group"
        )
    return None


def load_key_set(sources: KeySources, previous: KeySet | None = None) -> KeySet:
    """Load and validate every configured file; raise KeyFileError on the first bad one.

    A part with nothing configured gets an ephemeral value; when ``previous`` is given its
    ephemeral values are kept, so a reload never silently replaces them.
    """
    warnings: list[str] = []
    signing: tuple[SigningKey, ...]
    hmacs: tuple[bytes, ...]
    if sources.signing_configured:
        files = sources.signing_files()
        signing = tuple(load_signing_key(f) for f in files)
        warnings.extend(w for w in map(permission_warning, files) if w)
    else:
        if previous is not None and previous.signing_ephemeral:
            signing = previous.signing_keys
        else:
            signing = (generate_ephemeral_key(),)
        warnings.append(
            "no signing keys configured (auth_server.signing_keys_dir): using an ephemeral "
            f"ES256 key; {EPHEMERAL_WARNING}"
        )
    if sources.hmac_configured:
        files = sources.hmac_files()
        hmacs = tuple(load_hmac_secret(f) for f in files)
        warnings.extend(w for w in map(permission_warning, files) if w)
    else:
        if previous is not None and previous.hmac_ephemeral:
            hmacs = previous.hmac_secrets
        else:
            hmacs = (secrets.token_bytes(32),)
        warnings.append(
            "no HMAC secrets configured (auth_server.hmac_secrets_dir): using an ephemeral "
            f"secret; {EPHEMERAL_WARNING}"
        )
    return KeySet(
        signing_keys=signing,
        hmac_secrets=hmacs,
        warnings=tuple(warnings),
        hmac_ephemeral=not sources.hmac_configured,
        ignored=sources.ignored(),
    )


class KeyRing:
    """The current KeySet, shared in-process by the token issuer, the guard and the JWKS.

    ``replace`` swaps in a new set atomically (one attribute assignment in the reactor thread)
    and bumps ``generation``; readers that cache per key set (the guard's verified tokens,
    the metadata documents) compare it to notice the swap.
    """

    def __init__(self, keyset: KeySet) -> None:
        self.generation = 0
        self._install(keyset)

    @classmethod
    def load(cls, sources: KeySources, log: Logger | None = None) -> KeyRing:
        """Load the key set from ``sources`` (raising KeyFileError) and log its warnings."""
        keyset = load_key_set(sources)
        ring = cls(keyset)
        logger = log if log is not None else _log
        for warning in keyset.warnings:
            logger.warn("Keys: {problem}", problem=warning)
        for entry in keyset.ignored:
            logger.error("Keys: {entry}", entry=entry)
        logger.info(
            "Loaded {signing} signing keys and {hmac} HMAC secrets; active kid {kid}",
            signing=len(keyset.signing_keys),
            hmac=len(keyset.hmac_secrets),
            kid=ring.active_signing_key.kid,
        )
        return ring

    def _install(self, keyset: KeySet) -> None:
        if not keyset.signing_keys or not keyset.hmac_secrets:
            raise ValueError("a key set needs at least one signing key and one HMAC secret")
        by_kid: dict[str, SigningKey] = {}
        for key in keyset.signing_keys:
            by_kid.setdefault(key.kid, key)
        jwks = {"keys": [key.public_jwk() for key in by_kid.values()]}
        self._keyset = keyset
        self._by_kid = by_kid
        self._jwks = jwks
        self._jwks_json = json.dumps(jwks, separators=(",", ":")).encode("utf-8")
        self._jwks_etag = hashlib.sha256(self._jwks_json).hexdigest()[:32]

    @property
    def keyset(self) -> KeySet:
        return self._keyset

    @property
    def active_signing_key(self) -> SigningKey:
        return self._keyset.signing_keys[0]

    @property
    def signing_keys(self) -> tuple[SigningKey, ...]:
        return self._keyset.signing_keys

    def key_for_kid(self, kid: str) -> SigningKey | None:
        """The key with this ``kid`` if it is still in the ring."""
        return self._by_kid.get(kid)

    @property
    def active_hmac_secret(self) -> bytes:
        return self._keyset.hmac_secrets[0]

    @property
    def hmac_secrets(self) -> tuple[bytes, ...]:
        return self._keyset.hmac_secrets

    def jwks(self) -> dict[str, Any]:
        """``{"keys": [...]}``: every key's public part, active first, de-duplicated by kid."""
        return {"keys": [dict(k) for k in self._jwks["keys"]]}

    def jwks_json(self) -> bytes:
        """The JWKS as compact JSON bytes, built once per key set."""
        return self._jwks_json

    def jwks_etag(self) -> str:
        """A strong validator for the current JWKS document."""
        return self._jwks_etag

    def replace(self, keyset: KeySet) -> None:
        """Swap in ``keyset`` and bump ``generation``."""
        self._install(keyset)
        self.generation += 1


def fingerprint(sources: KeySources) -> str:
    """A digest of the file names and contents the key set would be loaded from.

    Used by the watcher to notice changes cheaply; unreadable states are part of the digest
    so that a transition in or out of them is a change too.
    """
    h = hashlib.sha256()

    def feed(paths: Iterable[str]) -> None:
        for path in paths:
            h.update(path.encode("utf-8", "surrogateescape") + b"\0")
            try:
                h.update(hashlib.sha256(_read(path, "key")).digest())
            except KeyFileError as e:
                h.update(f"error:{e.reason}".encode())

    # An entry ignored as not a regular file changes the digest too, so it gets reported.
    for entry in sources.ignored():
        h.update(entry.encode("utf-8", "surrogateescape") + b"\0")
    for part in (sources.signing_files, sources.hmac_files):
        try:
            feed(part())
        except KeyFileError as e:
            h.update(f"dir-error:{e}".encode("utf-8", "surrogateescape"))
    return h.hexdigest()
