"""The ``authproxy`` command: ``run``, ``check``, ``keys`` and ``--version``.

    authproxy run --config FILE [TWISTD_OPTION ...]   # twistd -n --pidfile= ... authproxy --config FILE
    authproxy check --config FILE [--root DIR]         # like nginx -t: exit 0 if usable, else 1
    authproxy keys generate|generate-hmac|jwks ...     # the key tool (also ``authproxy-keys``)
    authproxy kube render FILE [--patch] [--output-dir DIR]  # an EmbeddedAuthServer -> objects
    authproxy --version

Each subcommand is one ``Subcommand`` in ``SUBCOMMANDS``: a name, a help line, how it adds
its arguments and what it runs. A new one (``kube render``) is one more entry.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import attrs

import authproxy


@attrs.frozen
class Subcommand:
    """One ``authproxy NAME ...`` command."""

    name: str
    help: str
    #: Adds the subcommand's arguments to its parser.
    arguments: Callable[[argparse.ArgumentParser], None]
    #: Runs it with the parsed arguments and the ones its parser did not know; the exit status.
    run: Callable[[argparse.Namespace, list[str]], int]
    #: Whether arguments its parser does not know are passed on (to twistd, to the key
    #: tool) or refused.
    passes_on: bool = False


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", required=True, metavar="FILE")
    parser.add_argument("--daemon", action="store_true", help="detach (twistd without --nodaemon)")
    parser.epilog = (
        "Other options go to twistd (twistd --help): e.g. --logfile, --logger, --reactor. "
        "By default authproxy stays in the foreground (--nodaemon) without a pid file."
    )


def twistd_argv(config: str, options: Sequence[str], daemon: bool = False) -> list[str]:
    """twistd's arguments for ``authproxy run``: foreground and no pid file unless asked."""
    defaults = [] if daemon else ["--nodaemon"]
    if not daemon and not any(o == "--pidfile" or o.startswith("--pidfile=") for o in options):
        defaults.append("--pidfile=")
    return [*defaults, *options, "authproxy", "--config", config]


def _run(args: argparse.Namespace, twistd_options: list[str]) -> int:
    from twisted.scripts.twistd import run

    # twistd reads its arguments from sys.argv; its plugin is the one twistd authproxy runs.
    sys.argv = ["twistd", *twistd_argv(args.config, twistd_options, args.daemon)]
    run()
    return 0


def _check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", required=True, metavar="FILE")
    parser.add_argument(
        "--root",
        metavar="DIR",
        help="look up the absolute paths of the files the configuration names "
        "(keys, secrets) under DIR, as if DIR were /",
    )


def _check(args: argparse.Namespace, _: list[str]) -> int:
    from authproxy.ops.check import check_config

    return check_config(args.config, root=args.root).write(sys.stdout, sys.stderr)


def _keys_arguments(parser: argparse.ArgumentParser) -> None:
    # Everything after "keys" is the key tool's own command line (its --help included).
    parser.add_argument("argv", nargs=argparse.REMAINDER)


def _keys(args: argparse.Namespace, rest: list[str]) -> int:
    from authproxy.keys.keytool import main

    return main([*rest, *args.argv], prog="authproxy keys")


def _kube_arguments(parser: argparse.ArgumentParser) -> None:
    from authproxy.kube.render import add_arguments

    sub = parser.add_subparsers(dest="kube_command", required=True, metavar="COMMAND")
    add_arguments(
        sub.add_parser("render", help="the Kubernetes objects that run an EmbeddedAuthServer")
    )


def _kube(args: argparse.Namespace, _: list[str]) -> int:
    from authproxy.kube.render import run

    return run(args)


SUBCOMMANDS = (
    Subcommand("run", "run the daemon under twistd", _run_arguments, _run, passes_on=True),
    Subcommand("check", "check a configuration file and exit", _check_arguments, _check),
    Subcommand(
        "keys", "create signing keys and HMAC secrets", _keys_arguments, _keys, passes_on=True
    ),
    Subcommand("kube", "render an EmbeddedAuthServer resource", _kube_arguments, _kube),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="authproxy",
        description="OAuth 2.1 authorization server and streaming reverse proxy for MCP servers.",
    )
    parser.add_argument("--version", action="version", version=f"authproxy {authproxy.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in SUBCOMMANDS:
        # keys leaves --help to the key tool's own parser
        child = sub.add_parser(command.name, help=command.help, add_help=command.name != "keys")
        command.arguments(child)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``authproxy`` console script; returns the exit status."""
    parser = build_parser()
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    command = next(command for command in SUBCOMMANDS if command.name == args.command)
    if rest and not command.passes_on:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return command.run(args, rest)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
