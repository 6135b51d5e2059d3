"""Key material helpers for tests: PEM generators and a kubelet-style Secret directory."""

from __future__ import annotations

import os
import secrets
import shutil

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519


def ec_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def ed_pem() -> bytes:
    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class KubeletDir:
    """A directory updated the way kubelet's AtomicWriter updates a mounted Secret.

    Files live in a timestamped directory, ``..data`` is a symlink to it and each visible name
    is a symlink through ``..data``; an update writes a new timestamped directory and renames a
    temporary symlink onto ``..data`` in one atomic step.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.count = 0
        os.makedirs(path)

    def publish(self, files: dict[str, bytes]) -> None:
        self.count += 1
        ts = f"..2026_11_27_10_00_{self.count:02d}.123"
        ts_path = os.path.join(self.path, ts)
        os.mkdir(ts_path)
        for name, data in files.items():
            fd = os.open(os.path.join(ts_path, name), os.O_WRONLY | os.O_CREAT, 0o400)
            os.write(fd, data)
            os.close(fd)
        data_link = os.path.join(self.path, "..data")
        old = os.readlink(data_link) if os.path.islink(data_link) else None
        tmp = os.path.join(self.path, "..data_tmp")
        os.symlink(ts, tmp)
        os.rename(tmp, data_link)
        for name in files:
            visible = os.path.join(self.path, name)
            if not os.path.islink(visible):
                os.symlink(os.path.join("..data", name), visible)
        for name in os.listdir(self.path):
            if not name.startswith("..") and name not in files:
                os.unlink(os.path.join(self.path, name))
        if old is not None:
            shutil.rmtree(os.path.join(self.path, old))


def hmac_secret() -> bytes:
    """A fresh HMAC secret file body (48 random bytes, hex)."""
    return secrets.token_hex(48).encode()
