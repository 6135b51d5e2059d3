"""systemd socket activation: a missing inherited socket is one line naming what was passed."""

from __future__ import annotations

import os

from twisted.python.systemd import ListenFDs
from twisted.trial.unittest import SynchronousTestCase

from authproxy.config import ConfigError, config_from_mapping
from authproxy.ops.socket_activation import systemd_listen_problem

NAMED = "systemd:domain=INET6:name=authproxy"


def passed(*names: str) -> ListenFDs:
    """What systemd passes with one socket per name (descriptors from 3)."""
    return ListenFDs(list(range(3, 3 + len(names))), names)


class SystemdListenProblemTests(SynchronousTestCase):
    def test_named_socket_passed(self) -> None:
        self.assertIsNone(systemd_listen_problem(NAMED, passed("metrics", "authproxy")))

    def test_name_missing_says_what_was_passed(self) -> None:
        problem = systemd_listen_problem(NAMED, passed("http"))
        self.assertEqual(
            problem,
            f'"{NAMED}": systemd passed no socket named "authproxy" (LISTEN_FDNAMES: "http"; '
            "the socket unit's FileDescriptorName= must match, and the service must be "
            "started by its socket unit)",
        )

    def test_nothing_passed(self) -> None:
        problem = systemd_listen_problem(NAMED, passed())
        self.assertIn("LISTEN_FDNAMES: none", str(problem))

    def test_index_out_of_range(self) -> None:
        problem = systemd_listen_problem("systemd:domain=INET:index=1", passed("authproxy"))
        self.assertIn("no socket at index 1 (1 passed", str(problem))
        self.assertIsNone(systemd_listen_problem("systemd:domain=INET:index=0", passed("x")))

    def test_other_endpoints_untouched(self) -> None:
        self.assertIsNone(systemd_listen_problem("tcp:8080", passed()))
        # Malformed systemd descriptions are left to Twisted's parser to word.
        self.assertIsNone(systemd_listen_problem("systemd:domain=INET", passed()))

    def test_config_reports_it_as_one_line(self) -> None:
        # This process was not socket-activated: nothing named "authproxy" is inherited.
        self.assertNotIn("LISTEN_FDS", os.environ)
        data = {
            "server": {"listen": [NAMED], "public_url": "http://127.0.0.1:8080"},
            "backend": {"url": "http://127.0.0.1:9"},
            "upstream": {
                "type": "oidc",
                "issuer_url": "https://idp.example.com",
                "client_id": "authproxy",
            },
        }
        e = self.assertRaises(ConfigError, config_from_mapping, data, {})
        self.assertEqual(len(e.problems), 1)
        self.assertTrue(e.problems[0].startswith(f'server.listen[0]: "{NAMED}": systemd passed'))
