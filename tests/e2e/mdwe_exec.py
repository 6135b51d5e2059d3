"""Run a program under the kernel's memory-deny-write-execute policy, as systemd's
``MemoryDenyWriteExecute=yes`` does: ``python mdwe_exec.py PROGRAM ARGS...``.

``prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN)`` (Linux 6.3+) refuses every mapping that is
or becomes both writable and executable, for this process and whatever it execs. Exit
status 3 (and a line on stderr) when the kernel does not support it.
"""

import ctypes
import os
import sys

PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1
UNSUPPORTED = 3

if __name__ == "__main__":
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        sys.stderr.write(f"PR_SET_MDWE unsupported: {os.strerror(ctypes.get_errno())}\n")
        raise SystemExit(UNSUPPORTED)
    os.execvp(sys.argv[1], sys.argv[1:])
