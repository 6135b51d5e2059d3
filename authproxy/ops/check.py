"""The configuration check, like ``nginx -t``: ``authproxy check`` and ``twistd authproxy --check``.

It runs every step of loading the configuration (structure, validation, the startup check
that reads key, secret and password files and parses the listen endpoints) and reports all
problems at once. It listens on nothing, starts nothing and opens no connection: the IdP
and Redis are not asked, so a check passes on a build machine that cannot reach them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TextIO

import attrs

from authproxy.config import ConfigError, load_config
from authproxy.keys.ring import KeyFileError, KeySources, load_key_set


@attrs.frozen
class CheckReport:
    """What the check found in one file: ``problems`` make it unusable, ``warnings`` do not."""

    path: str
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def write(self, out: TextIO, err: TextIO) -> int:
        """Print the report (one line per problem or warning, each naming the file); the exit
        status: 0 when the file is usable, 1 when not."""
        for warning in self.warnings:
            err.write(f"{self.path}: warning: {warning}\n")
        for problem in self.problems:
            # load_config's own "cannot read" line names the file already
            line = problem if problem.startswith(f"{self.path}:") else f"{self.path}: {problem}"
            err.write(line + "\n")
        if self.ok:
            out.write(f"{self.path}: configuration OK\n")
            return 0
        return 1


def check_config(
    path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    root: str | None = None,
) -> CheckReport:
    """Check the configuration file at ``path`` as the daemon would load it.

    ``environ`` is where ``client_secret_env`` is looked up (default: this process's);
    ``root`` stands for ``/`` for the files the configuration names (``config.under_root``).
    """
    name = os.fspath(path)
    try:
        config = load_config(path, environ=environ, root=root)
    except ConfigError as e:
        return CheckReport(name, problems=tuple(e.problems))
    try:
        # Read once more for what loading alone does not say (modes, ephemeral keys).
        keys = load_key_set(KeySources.from_config(config.auth_server))
    except KeyFileError as e:  # changed since the check a moment ago
        return CheckReport(name, problems=(f"auth_server keys: {e}",))
    return CheckReport(name, warnings=keys.warnings + keys.ignored)
