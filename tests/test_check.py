"""The configuration check: every problem in one pass, files included; the authproxy command."""

from __future__ import annotations

import contextlib
import io
import socket
import subprocess
from pathlib import Path
from typing import Any

from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from authproxy import command
from authproxy.config import ConfigError, Secret, config_from_mapping, load_config, under_root
from authproxy.ops.check import CheckReport, check_config
from authproxy.tap import Options, makeService
from tests.processes import authproxy_command, free_port, twistd_authproxy
from tests.test_config import minimal

EXAMPLE = Path(__file__).parent.parent / "etc" / "authproxy.example.toml"


def run_command(*argv: str) -> tuple[int, str, str]:
    """``authproxy ARGV...`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = command.main(list(argv))
        except SystemExit as e:  # argparse's --version, --help and usage errors
            code = int(e.code or 0)
    return code, out.getvalue(), err.getvalue()


def prepare_example_root(case: SynchronousTestCase) -> str:
    """The files etc/authproxy.example.toml names, made the way an operator would (with
    ``authproxy keys``), under a fresh directory standing for ``/`` (as .ci/run does)."""
    root = Path(case.mktemp())
    etc = root / "etc" / "authproxy"
    for sub in ("keys", "hmac", "upstream"):
        (etc / sub).mkdir(parents=True)
    for argv in (
        ("generate", str(etc / "keys" / "key-0.pem")),
        ("generate-hmac", str(etc / "hmac" / "hmac-0")),
    ):
        code, _, err = run_command("keys", *argv)
        case.assertEqual(code, 0, err)
    (etc / "upstream" / "client-secret").write_text("s3cret-value\n")
    (etc / "upstream" / "client-secret").chmod(0o400)
    return str(root)


def write_toml(case: SynchronousTestCase, text: str) -> str:
    path = Path(case.mktemp() + ".toml")
    path.write_text(text)
    return str(path)


GOOD = """
[server]
public_url = "http://127.0.0.1:8080"
[backend]
url = "http://127.0.0.1:9000"
[upstream]
type = "development"
"""


class OnePassTests(SynchronousTestCase):
    """Every problem of a file, the files it names included, in one report."""

    def bad_files(self) -> dict[str, str]:
        directory = Path(self.mktemp())
        directory.mkdir()
        short = directory / "hmac-short"
        short.write_text("too short\n")
        return {
            "missing_dir": str(directory / "no-keys"),
            "short": str(short),
            "missing": str(directory / "no-such-hmac"),
            "secret": str(directory / "no-secret"),
        }

    def test_every_problem_with_the_key_files(self) -> None:
        files = self.bad_files()
        data = {
            "server": {"public_url": "https://mcp.example.com", "listen": ["tcp:8080"]},
            "backend": {"url": "http://127.0.0.1:9000"},
            "auth_server": {
                "signing_keys_dir": files["missing_dir"],
                "hmac_secret_files": [files["short"], files["missing"]],
            },
            "upstream": {
                "type": "oidc",
                "issuer_url": "http://idp.example.com",
                "client_id": "authproxy",
                "client_secret_file": files["secret"],
            },
        }
        with self.assertRaises(ConfigError) as caught:
            config_from_mapping(data, environ={})
        problems = caught.exception.problems
        expected = [
            f"auth_server.signing_keys_dir: {files['missing_dir']}: directory not found",
            f"auth_server.hmac_secret_files[0]: {files['short']}: HMAC secret has 9 bytes; "
            "at least 32 are required",
            f"auth_server.hmac_secret_files[1]: {files['missing']}: secret file not found",
            f'upstream.client_secret_file: cannot read "{files["secret"]}"',
            'upstream.issuer_url: "http://idp.example.com" must use https',
        ]
        for line in expected:
            self.assertTrue(any(p.startswith(line) for p in problems), (line, problems))
        self.assertEqual(len(problems), len(expected), problems)

    def test_files_checked_when_the_file_does_not_structure(self) -> None:
        files = self.bad_files()
        data = {
            "server": {"public_url": "http://127.0.0.1:8080", "max_request_body": 4},
            "backend": {"url": "http://127.0.0.1:9000", "surprise": True},
            "auth_server": {"hmac_secrets_dir": files["missing_dir"]},
            "upstream": {"type": "development"},
        }
        with self.assertRaises(ConfigError) as caught:
            config_from_mapping(data, environ={})
        problems = caught.exception.problems
        self.assertIn(
            'server.max_request_body: 4 has no unit: write the size with one (e.g. "4MiB")',
            problems,
        )
        self.assertIn("backend.surprise: unknown key", problems)
        self.assertIn(
            f"auth_server.hmac_secrets_dir: {files['missing_dir']}: directory not found", problems
        )


class UnitTests(SynchronousTestCase):
    """A duration or a size without a unit is refused, saying which unit to write."""

    def problems(self, **sections: dict[str, Any]) -> list[str]:
        with self.assertRaises(ConfigError) as caught:
            config_from_mapping(minimal(**sections), environ={})
        return caught.exception.problems

    def test_bare_numbers_refused(self) -> None:
        problems = self.problems(
            server={"max_request_body": 4, "header_timeout": "10"},
            auth_server={"access_token_lifespan": 900},
        )
        self.assertEqual(
            sorted(problems),
            [
                "auth_server.access_token_lifespan: 900 has no unit: write the duration with "
                'one (e.g. "900s")',
                "server.header_timeout: '10' has no unit: write the duration with one "
                '(e.g. "10s")',
                'server.max_request_body: 4 has no unit: write the size with one (e.g. "4MiB")',
            ],
        )


class IdpUrlTests(SynchronousTestCase):
    """Codes and secrets go to the IdP: plain http only to one on loopback."""

    def upstream(self, **fields: Any) -> dict[str, Any]:
        return {
            "server": {"public_url": "http://127.0.0.1:8080"},
            "backend": {"url": "http://127.0.0.1:9000"},
            "upstream": {"client_id": "authproxy", **fields},
        }

    def test_http_issuer_refused_off_loopback(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            config_from_mapping(self.upstream(issuer_url="http://idp.example.com"), environ={})
        self.assertEqual(
            caught.exception.problems,
            [
                'upstream.issuer_url: "http://idp.example.com" must use https (http is allowed '
                "only for localhost, 127.0.0.0/8 and [::1])"
            ],
        )

    def test_every_oauth2_endpoint_checked(self) -> None:
        data = self.upstream(
            type="oauth2",
            authorization_endpoint="http://idp.example.com/authorize",
            token_endpoint="https://idp.example.com/token",
            revocation_endpoint="http://idp.example.com/revoke",
            userinfo={"endpoint_url": "http://api.example.com/user"},
        )
        with self.assertRaises(ConfigError) as caught:
            config_from_mapping(data, environ={})
        fields = sorted(p.partition(":")[0] for p in caught.exception.problems)
        self.assertEqual(
            fields,
            [
                "upstream.authorization_endpoint",
                "upstream.revocation_endpoint",
                "upstream.userinfo.endpoint_url",
            ],
        )

    def test_http_on_loopback_allowed(self) -> None:
        for url in ("http://127.0.0.1:3000", "http://localhost:3000", "http://[::1]:3000"):
            config = config_from_mapping(self.upstream(issuer_url=url), environ={})
            self.assertEqual(config.upstream.issuer_url, url)


class RootTests(SynchronousTestCase):
    def test_absolute_file_paths_move_under_root(self) -> None:
        data = {
            "auth_server": {"signing_keys_dir": "/etc/k", "hmac_secret_files": ["/etc/h", "rel"]},
            "upstream": {"client_secret_file": "/etc/s"},
            "storage": {"password_file": ""},
            "server": {"listen": ["ssl:443:privateKey=/etc/tls.key"]},
        }
        moved = under_root(data, "/r")
        self.assertEqual(moved["auth_server"]["signing_keys_dir"], "/r/etc/k")
        self.assertEqual(moved["auth_server"]["hmac_secret_files"], ["/r/etc/h", "rel"])
        self.assertEqual(moved["upstream"]["client_secret_file"], "/r/etc/s")
        self.assertEqual(moved["storage"]["password_file"], "")
        self.assertEqual(moved["server"], data["server"])
        self.assertEqual(data["auth_server"]["signing_keys_dir"], "/etc/k")  # not changed

    def test_example_loads_from_the_files_it_names(self) -> None:
        config = load_config(EXAMPLE, environ={}, root=prepare_example_root(self))
        self.assertEqual(config.server.public_url, "https://mcp.example.com")
        self.assertEqual(config.auth_server.access_token_lifespan, 900)
        self.assertEqual(config.auth_server.registration.rate_count, 5)
        self.assertEqual(config.auth_server.registration.rate_period, 60)
        self.assertEqual(config.upstream.client_secret, Secret("s3cret-value"))
        self.assertNotIn("s3cret-value", repr(config))

    def test_example_checks_against_the_files_it_names(self) -> None:
        root = prepare_example_root(self)
        report = check_config(EXAMPLE, environ={}, root=root)
        self.assertEqual(report.problems, ())
        self.assertEqual(report.warnings, ())

    def test_example_without_its_files_is_not_ok(self) -> None:
        report = check_config(EXAMPLE, environ={}, root=self.mktemp())
        self.assertEqual(
            [p.partition(":")[0] for p in report.problems],
            [
                "auth_server.signing_keys_dir",
                "auth_server.hmac_secrets_dir",
                "upstream.client_secret_file",
            ],
        )


class ReportTests(SynchronousTestCase):
    def write(self, report: CheckReport) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        return report.write(out, err), out.getvalue(), err.getvalue()

    def test_ok_exits_0(self) -> None:
        code, out, err = self.write(CheckReport("a.toml", warnings=("mode 0644",)))
        self.assertEqual(
            (code, out, err), (0, "a.toml: configuration OK\n", "a.toml: warning: mode 0644\n")
        )

    def test_problems_exit_1_one_line_each(self) -> None:
        report = CheckReport("a.toml", problems=("x: bad", "a.toml: cannot read (gone)"))
        code, out, err = self.write(report)
        self.assertEqual((code, out), (1, ""))
        self.assertEqual(err, "a.toml: x: bad\na.toml: cannot read (gone)\n")


class CommandTests(SynchronousTestCase):
    def test_version(self) -> None:
        code, out, _ = run_command("--version")
        self.assertEqual((code, out.strip()), (0, "authproxy 0.1.0"))

    def test_check_good_and_bad(self) -> None:
        good = write_toml(self, GOOD)
        code, out, _ = run_command("check", "--config", good)
        self.assertEqual((code, out), (0, f"{good}: configuration OK\n"))
        bad = write_toml(self, GOOD.replace('type = "development"', 'type = "nope"'))
        code, out, err = run_command("check", "--config", bad)
        self.assertEqual((code, out), (1, ""))
        self.assertIn(f'{bad}: upstream.type: "nope" is not', err)

    def test_check_refuses_unknown_arguments(self) -> None:
        code, _, err = run_command("check", "--config", "x.toml", "--nodaemon")
        self.assertEqual(code, 2)
        self.assertIn("unrecognized arguments: --nodaemon", err)

    def test_keys_is_the_key_tool(self) -> None:
        path = self.mktemp()
        code, out, _ = run_command("keys", "generate-hmac", path)
        self.assertEqual((code, out), (0, f"wrote HMAC secret to {path}\n"))
        code, _, err = run_command("keys", "generate-hmac", path)
        self.assertEqual(code, 1)
        self.assertTrue(err.startswith("authproxy keys: "), err)

    def test_run_defaults_to_foreground_without_pidfile(self) -> None:
        self.assertEqual(
            command.twistd_argv("a.toml", ["--logfile", "x.log"]),
            ["--nodaemon", "--pidfile=", "--logfile", "x.log", "authproxy", "--config", "a.toml"],
        )
        self.assertEqual(
            command.twistd_argv("a.toml", ["--pidfile=/run/a.pid"], daemon=True),
            ["--pidfile=/run/a.pid", "authproxy", "--config", "a.toml"],
        )


class TwistdCheckTests(SynchronousTestCase):
    """twistd authproxy --config FILE --check: makeService checks and exits, building nothing."""

    def make(self, path: str) -> int:
        options = Options()
        options.parseOptions(["--config", path, "--check"])
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            with self.assertRaises(SystemExit) as caught:
                makeService(options, reactor=MemoryReactorClock())
        return int(caught.exception.code or 0)

    def test_exit_status(self) -> None:
        self.assertEqual(self.make(write_toml(self, GOOD)), 0)
        self.assertEqual(self.make(write_toml(self, GOOD + "[nope]\n")), 1)


class _TakenReactor(MemoryReactorClock):
    """Every port is in use."""

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        raise CannotListenError(interface, port, OSError(98, "Address already in use"))


class PortInUseTests(SynchronousTestCase):
    def test_exit_1_instead_of_a_traceback(self) -> None:
        path = write_toml(self, GOOD)
        # twistd listens in privilegedStartService; a caller that only starts, in startService
        for start in ("privilegedStartService", "startService"):
            service = makeService({"config": path}, reactor=_TakenReactor())
            with self.assertRaises(SystemExit) as caught:
                getattr(service, start)()
            self.assertEqual(caught.exception.code, 1, start)
            self.assertFalse(service.running, start)


class ProcessTests(SynchronousTestCase):
    """The commands as an operator runs them: real processes, their output and exit status."""

    def run_process(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    def test_check_good_and_bad_files(self) -> None:
        good = write_toml(self, GOOD)
        bad = write_toml(
            self,
            GOOD.replace("[backend]", "max_request_body = 4\n[backend]")
            + '[auth_server]\nhmac_secrets_dir = "/nonexistent/hmac"\n',
        )
        for argv in (
            lambda path: authproxy_command("check", "--config", path),
            lambda path: twistd_authproxy(path) + ["--check"],
        ):
            result = self.run_process(argv(good))
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual(result.stdout, f"{good}: configuration OK\n")
            result = self.run_process(argv(bad))
            self.assertEqual(result.returncode, 1, result.stderr)
            self.assertEqual(result.stdout, "")
            self.assertEqual(
                result.stderr.splitlines(),
                [
                    f"{bad}: server.max_request_body: 4 has no unit: write the size with one "
                    '(e.g. "4MiB")',
                    f"{bad}: auth_server.hmac_secrets_dir: /nonexistent/hmac: directory not found",
                ],
            )

    def test_port_in_use_is_one_line(self) -> None:
        port = free_port()
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", port))
        taken.listen()
        path = write_toml(
            self,
            GOOD.replace("8080", str(port)).replace(
                "[backend]", f'listen = ["tcp:{port}:interface=127.0.0.1"]\n[backend]'
            ),
        )
        result = self.run_process(twistd_authproxy(path))
        self.assertEqual(result.returncode, 1, result.stdout)
        self.assertEqual(
            result.stderr,
            f"authproxy: cannot listen on 127.0.0.1:{port}: address already in use\n",
        )
        self.assertNotIn("Traceback", result.stdout)
