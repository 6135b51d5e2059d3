"""How fast a running daemon serves rotated keys: kubelet-style directory swaps vs JWKS.

    ../venv/bin/python benchmarks/key_rotation.py [--rotations 5]

Starts ``twistd -n authproxy`` on loopback with its keys in a Kubernetes-style Secret
directory (``..data`` symlink), keeps requests flowing from a thread, rotates the keys
(a new key-0, the previous ones kept), and reports for each rotation the time until
``/.well-known/jwks.json`` lists the new key first, plus how many requests failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jwcrypto import jwk  # noqa: E402

from tests import processes as procs  # noqa: E402
from tests.e2e.harness import Authproxy, KeyDirs, write_config  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rotations", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="authproxy-rotation-"))
    port = procs.free_port()
    keys = KeyDirs.create(root)
    config = write_config(
        root / "authproxy.toml",
        {
            "server": {
                "listen": [f"tcp:{port}:interface=127.0.0.1"],
                "public_url": f"http://127.0.0.1:{port}",
            },
            "backend": {"url": "http://127.0.0.1:9"},
            "auth_server": {"signing_keys_dir": keys.keys.path, "hmac_secrets_dir": keys.hmac.path},
            "upstream": {"type": "development"},
        },
    )
    proxy = Authproxy(config, port, root)
    proxy.start()
    stop = threading.Event()
    counts = {"ok": 0, "failed": 0}

    def requests() -> None:
        while not stop.is_set():
            try:
                with urllib.request.urlopen(proxy.url + "/.well-known/oauth-authorization-server"):
                    counts["ok"] += 1
            except OSError:
                counts["failed"] += 1

    worker = threading.Thread(target=requests)
    worker.start()
    latencies = []
    try:
        for _ in range(args.rotations):
            keys.rotate()
            started = time.monotonic()
            wanted = jwk.JWK.from_pem(keys.key_pems[0]).thumbprint()
            while True:
                with urllib.request.urlopen(proxy.url + "/.well-known/jwks.json") as r:
                    if json.load(r)["keys"][0]["kid"] == wanted:
                        break
                time.sleep(0.01)
            latencies.append(time.monotonic() - started)
            time.sleep(0.3)
    finally:
        stop.set()
        worker.join()
        proxy.stop()
    shown = ", ".join(f"{x:.3f}" for x in latencies)
    print(f"rotation -> new JWKS (s): {shown}; max {max(latencies):.3f}")
    print(f"requests during the rotations: {counts['ok']} ok, {counts['failed']} failed")


if __name__ == "__main__":
    main()
