"""Exec wrapper that ties the supervised backend's life to authproxy's.

``python -m authproxy.ops.pdeathsig --parent PID -- COMMAND [ARGS...]`` puts itself in a
process group of its own (so authproxy can stop the backend and whatever it forks as one
group), asks Linux to send it SIGTERM when its parent dies (``PR_SET_PDEATHSIG``, kept
across exec), checks that the parent ``PID`` is still its parent (authproxy may have died
before the request was in place), then execs ``COMMAND``. So the backend goes away
however authproxy ends, ``kill -9`` included, and never lingers holding its port.

Why a wrapper: Twisted's ``spawnProcess`` has no ``preexec_fn``, and both calls must run in
the child before exec. ``setpriv --pdeathsig`` does the prctl but not the process group and
needs util-linux 2.33+; this module runs on authproxy's own interpreter, which is present
wherever authproxy is. On other systems only the process group is set.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1
USAGE = "usage: python -m authproxy.ops.pdeathsig --parent PID -- COMMAND [ARGS...]"


def wrapper_argv(python: str, parent: int, command: Sequence[str]) -> list[str]:
    """The argv that runs ``command`` through this wrapper for parent ``parent``."""
    # -P: the backend's working directory is not put first on sys.path (a hostile
    # ``authproxy/`` there would run instead of this module); -P, not -I, keeps PYTHONPATH,
    # which an editable or compat install may need.
    return [python, "-P", "-m", "authproxy.ops.pdeathsig", "--parent", str(parent), "--", *command]


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """Ask the kernel for ``signum`` when the parent dies (Linux only; else nothing)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")


def main(argv: Sequence[str]) -> int:
    args = list(argv)
    if len(args) < 4 or args[0] != "--parent" or args[2] != "--" or not args[1].isdigit():
        sys.stderr.write(USAGE + "\n")
        return 2
    parent, command = int(args[1]), args[3:]
    os.setpgid(0, 0)
    die_with_parent()
    if os.getppid() != parent:
        sys.stderr.write("authproxy.ops.pdeathsig: the parent is gone; not starting\n")
        return 1
    try:
        os.execvp(command[0], command)
    except OSError as e:
        sys.stderr.write(f"authproxy.ops.pdeathsig: cannot run {command[0]!r}: {e.strerror}\n")
        return 127
    return 0  # unreachable: exec replaced this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
