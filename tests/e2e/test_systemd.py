"""What etc/ promises for systemd, checked with real processes on loopback.

- Socket activation (etc/authproxy.socket): ``systemd-socket-activate`` passes a named
  listening socket and starts authproxy on the first connection, which it then serves; a
  name systemd did not pass is a one-line configuration error.
- Hardening (etc/authproxy.service): TLS in both directions (an ``ssl:`` listener and an
  HTTPS IdP) works as the unit runs authproxy, and ``MemoryDenyWriteExecute=yes``, emulated
  with ``PR_SET_MDWE``, breaks both: cffi's ``ffi.callback()`` (pyOpenSSL's verify and info
  callbacks) needs memory that is writable and executable. That is why the unit omits it.
- ``systemd-analyze verify`` accepts the units.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import processes as procs
from tests.e2e.harness import write_config
from tests.e2e.tls import HTTPSDiscovery, LoopbackCA

pytestmark = pytest.mark.e2e

ETC = procs.REPO_ROOT / "etc"
MDWE_EXEC = Path(__file__).with_name("mdwe_exec.py")
W_X_ERROR = "Cannot allocate write+execute memory for ffi.callback()"


def systemd_tool(name: str) -> str:
    """The path of a tool from Debian's systemd package; CI installs it, elsewhere skip."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            raise AssertionError(f"{name} is not installed (Debian package systemd)")
        pytest.skip(f"{name} is not installed (Debian package systemd)")
    return path


def get(url: str, ca: LoopbackCA | None = None) -> tuple[int, str]:
    context = ca.client_context() if ca is not None else None
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:  # noqa: S310
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


# --- socket activation --------------------------------------------------------------------


def socket_activated(tmp_path: Path, fdname: str) -> tuple[procs.RunningProcess, int]:
    """authproxy (listening on ``systemd:...:name=authproxy``) under
    ``systemd-socket-activate --fdname=FDNAME``, which listens at once and execs authproxy
    on the first connection; and the port."""
    port = procs.free_port()
    config = write_config(
        tmp_path / "authproxy.toml",
        {
            "server": {
                "listen": ["systemd:domain=INET:name=authproxy"],
                "public_url": f"http://127.0.0.1:{port}",
            },
            "backend": {"url": "http://127.0.0.1:9"},
            # Not contacted: /health does not need the IdP.
            "upstream": {"type": "oidc", "issuer_url": "https://127.0.0.1:9", "client_id": "a"},
        },
    )
    tool = systemd_tool("systemd-socket-activate")
    process = procs.start_process(
        [tool, "-l", f"127.0.0.1:{port}", f"--fdname={fdname}", *procs.twistd_authproxy(config)],
        cwd=procs.REPO_ROOT,
        ready_line=r"Listening on 127\.0\.0\.1",
        name=f"socket-activated-{fdname}",
        log_dir=tmp_path,
    )
    return process, port


def test_socket_activated_request(tmp_path: Path) -> None:
    process, port = socket_activated(tmp_path, "authproxy")
    with process:
        # The first connection starts authproxy, which serves it on the inherited socket.
        status, body = get(f"http://127.0.0.1:{port}/health")
        assert (status, json.loads(body)) == (200, {"status": "ok"}), process.output()
        assert "Execing" in process.output()


def test_socket_name_missing_is_one_line(tmp_path: Path) -> None:
    process, port = socket_activated(tmp_path, "http")
    with process:
        with pytest.raises(OSError):
            get(f"http://127.0.0.1:{port}/health")
        assert process.popen.wait(30) == 1
        output = process.output()
    assert (
        'server.listen[0]: "systemd:domain=INET:name=authproxy": systemd passed no socket '
        'named "authproxy" (LISTEN_FDNAMES: "http";'
    ) in output, output
    assert "Traceback" not in output and "list index out of range" not in output, output


# --- TLS in both directions, with and without MemoryDenyWriteExecute ----------------------


@pytest.fixture
def tls_deployment(tmp_path: Path) -> Iterator[tuple[LoopbackCA, HTTPSDiscovery, Path, int, int]]:
    ca = LoopbackCA.create(tmp_path)
    idp = HTTPSDiscovery(ca)
    tls_port, plain_port = procs.free_port(), procs.free_port()
    config = write_config(
        tmp_path / "authproxy.toml",
        {
            "server": {
                "listen": [
                    f"ssl:{tls_port}:interface=127.0.0.1"
                    f":privateKey={ca.key_file}:certKey={ca.cert_file}",
                    f"tcp:{plain_port}:interface=127.0.0.1",
                ],
                "public_url": f"https://127.0.0.1:{tls_port}",
            },
            "backend": {"url": "http://127.0.0.1:9"},
            "upstream": {"type": "oidc", "issuer_url": idp.issuer, "client_id": "authproxy"},
        },
    )
    yield ca, idp, config, tls_port, plain_port
    idp.stop()


def start_tls_authproxy(
    tmp_path: Path, ca: LoopbackCA, config: Path, plain_port: int, prefix: list[str]
) -> procs.RunningProcess:
    return procs.start_process(
        [*prefix, *procs.twistd_authproxy(config)],
        cwd=procs.REPO_ROOT,
        # The IdP is trusted the way an operator's private CA would be: OpenSSL's default
        # verify paths, here pointed at the test CA.
        env={"SSL_CERT_FILE": str(ca.ca_file)},
        ready_url=f"http://127.0.0.1:{plain_port}/health",
        timeout=30,
        name="authproxy-tls",
        log_dir=tmp_path,
    )


def wait_ready(url: str, ca: LoopbackCA | None, process: procs.RunningProcess) -> str:
    """/ready's body once it answers 200; fails with authproxy's log after 15 s."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        status, body = get(url, ca)
        if status == 200:
            return body
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready: {body}\n{process.output()}")


def test_tls_both_directions(tmp_path: Path, tls_deployment) -> None:
    ca, idp, config, tls_port, plain_port = tls_deployment
    with start_tls_authproxy(tmp_path, ca, config, plain_port, []) as process:
        # /ready over the ssl: listener turns 200 once discovery over HTTPS succeeded.
        wait_ready(f"https://127.0.0.1:{tls_port}/ready", ca, process)
        assert idp.requests >= 1
        assert W_X_ERROR not in process.output()


def test_memory_deny_write_execute_breaks_tls(tmp_path: Path, tls_deployment) -> None:
    """If this fails because TLS now works under PR_SET_MDWE, cffi/pyOpenSSL stopped
    needing W+X memory: MemoryDenyWriteExecute=yes can go back into etc/authproxy.service."""
    ca, idp, config, tls_port, plain_port = tls_deployment
    probe = subprocess.run([sys.executable, str(MDWE_EXEC), "true"], capture_output=True)
    if probe.returncode == 3:
        pytest.skip(probe.stderr.decode().strip())
    prefix = [sys.executable, str(MDWE_EXEC)]
    with start_tls_authproxy(tmp_path, ca, config, plain_port, prefix) as process:
        with pytest.raises(OSError):  # inbound: the handshake fails
            get(f"https://127.0.0.1:{tls_port}/health", ca)
        # outbound: discovery over HTTPS fails the same way (a second W+X error), so /ready
        # stays 503 and the IdP never sees a request.
        deadline = time.monotonic() + 15
        while process.output().count(W_X_ERROR) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert process.output().count(W_X_ERROR) >= 2, process.output()
        status, body = get(f"http://127.0.0.1:{plain_port}/ready")
        assert status == 503, body
        assert idp.requests == 0


# --- the units --------------------------------------------------------------------------


def test_units_verify(tmp_path: Path) -> None:
    """``systemd-analyze verify`` (no systemd needed as PID 1) reports nothing, warnings
    included. It insists that ExecStart's program exists: the copies point it at a stand-in."""
    stand_in = tmp_path / "twistd"
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    units = []
    for name in ("authproxy.service", "authproxy.socket"):
        text = (ETC / name).read_text()
        (tmp_path / name).write_text(text.replace("/opt/authproxy/bin/twistd", str(stand_in)))
        units.append(str(tmp_path / name))
    result = subprocess.run(
        [systemd_tool("systemd-analyze"), "verify", "--man=no", *units],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    service = (ETC / "authproxy.service").read_text()
    assert "\nMemoryDenyWriteExecute=" not in service, "it breaks TLS: see the test above"
