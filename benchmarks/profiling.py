"""Sample authproxy with py-spy while a workload runs, and summarise where the time goes.

``py-spy record --format raw`` writes collapsed stacks (``frame;frame;frame count``). The
summary lists, per function, the share of samples where it is the innermost frame (self
time) and where it is anywhere on the stack (inclusive time), plus the hottest stacks.

Standalone: ``python benchmarks/profiling.py STACKS.txt`` prints the summary of a raw file.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def py_spy() -> str | None:
    candidate = Path(sys.executable).parent / "py-spy"
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


async def record(pid: int, seconds: float, out: Path, core: str) -> asyncio.subprocess.Process:
    """Start sampling ``pid`` for ``seconds`` (non-blocking: the target is never paused)."""
    binary = py_spy()
    if binary is None:
        raise RuntimeError("py-spy is not installed: pip install py-spy")
    return await asyncio.create_subprocess_exec(
        "taskset", "-c", core, binary, "record", "--pid", str(pid), "--duration",
        str(int(seconds)), "--rate", "250", "--nonblocking", "--format", "raw",
        "--output", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


def short(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> ``func (pkg/file.py)``: group by function, not line."""
    found = _FRAME.match(frame.strip())
    if not found:
        return frame.strip()
    path = found.group("file")
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{found.group('func')} ({path})"


def summarise(raw: Path, top: int = 30) -> str:
    """The self/inclusive table of a raw py-spy file."""
    selfs: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    stacks: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [short(f) for f in stack.split(";") if f and not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        if not frames:
            continue
        total += count
        selfs[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
        stacks[" <- ".join(reversed(frames[-4:]))] += count
    if total == 0:
        return "no samples\n"
    out = [f"{total} samples\n", "self %  function"]
    out += [f"{100 * n / total:6.1f}  {f}" for f, n in selfs.most_common(top)]
    out += ["", "incl %  function"]
    out += [f"{100 * n / total:6.1f}  {f}" for f, n in inclusive.most_common(top)]
    out += ["", "self %  innermost frames (innermost first)"]
    out += [f"{100 * n / total:6.1f}  {s}" for s, n in stacks.most_common(15)]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(summarise(Path(sys.argv[1])))
