"""A Kubernetes-style mounted Secret directory for authproxy's keys, and its rotation.

The kubelet writes a Secret's files into a timestamped directory, points the ``..data``
symlink at it with an atomic rename, and exposes each file as a symlink through ``..data``.
``KubeletDir.publish`` does the same, so authproxy's watcher sees exactly what a pod sees.

Usable standalone for manual tests:
``python benchmarks/keydir.py rotate KEYS_DIR`` (new key-0, every older key kept after it).
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def new_ec_key_pem() -> bytes:
    """A fresh P-256 private key (ES256) as PKCS#8 PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class KubeletDir:
    """One directory updated the way the kubelet updates a mounted Secret."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)

    def files(self) -> dict[str, bytes]:
        """The current visible files and their contents."""
        return {
            p.name: p.read_bytes()
            for p in sorted(self.path.iterdir())
            if not p.name.startswith("..") and p.is_file()
        }

    def publish(self, files: dict[str, bytes]) -> None:
        """Atomically replace the directory's visible content by ``files``."""
        stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.") + secrets.token_hex(4)
        target = self.path / stamp
        target.mkdir(mode=0o700)
        for name, content in files.items():
            file = target / name
            file.write_bytes(content)
            file.chmod(0o400)
        old = os.readlink(self.path / "..data") if (self.path / "..data").is_symlink() else None
        tmp = self.path / "..data_tmp"
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(stamp)
        os.rename(tmp, self.path / "..data")  # the atomic swap
        for name in files:
            link = self.path / name
            if not link.is_symlink():
                link.symlink_to(Path("..data") / name)
        for link in self.path.iterdir():
            if not link.name.startswith("..") and link.name not in files:
                link.unlink()
        if old is not None:
            shutil.rmtree(self.path / old, ignore_errors=True)


def rotate_signing_keys(keys: KubeletDir) -> bytes:
    """A new key-0; the previous key-0 becomes key-1, key-1 key-2, and so on (all still verify)."""
    current = keys.files()
    ordered = sorted(current, key=lambda name: int(name[4:-4]))
    new = new_ec_key_pem()
    files = {"key-0.pem": new}
    for index, name in enumerate(ordered, start=1):
        files[f"key-{index}.pem"] = current[name]
    keys.publish(files)
    return new


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] not in ("init", "rotate"):
        sys.exit("usage: keydir.py init|rotate KEYS_DIR")
    keys = KubeletDir(Path(sys.argv[2]))
    if sys.argv[1] == "init":
        keys.publish({"key-0.pem": new_ec_key_pem()})
    else:
        rotate_signing_keys(keys)


if __name__ == "__main__":
    main()
