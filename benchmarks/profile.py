"""Optional py-spy sampling of the broker, the endpoint and the SDK during the throughput run.

Each process gets a `py-spy record --format raw` (collapsed stacks, one line per stack with its
sample count); `summary` turns them into the functions that hold the most samples, which is
what docs/performance.md quotes.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RATE = 200  # samples per second
#: Source folders of fnrelay itself: the inclusive ranking keeps only these frames.
PROJECT_DIRS = ("fnrelay_broker/", "fnrelay_endpoint/", "fnrelay/")


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


@contextmanager
def sampling(pids: dict[str, int], out: Path, with_children: frozenset[str] = frozenset()
             ) -> Iterator[dict[str, Path]]:
    """py-spy records every process in `pids` (name -> pid) while inside; those named in
    `with_children` with their subprocesses (the endpoint's workers)."""
    exe = py_spy()
    if exe is None:
        raise RuntimeError("--profile needs py-spy: pip install py-spy")
    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / f"{name}.txt" for name in pids}
    procs = [subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", str(RATE),
                               *(["--subprocesses"] if name in with_children else []),
                               "--nonblocking", "--format", "raw", "-o", str(files[name])],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for name, pid in pids.items()]
    try:
        yield files
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _ours(frame: str) -> bool:
    return any(d in frame for d in PROJECT_DIRS)


def _frame(frame: str) -> str:
    """'fn (path/to/module.py:12)' -> 'module.py:fn'."""
    name, _, where = frame.partition(" (")
    return f"{Path(where.split(':')[0]).name}:{name}" if where else name


def summary(path: Path, top: int = 12) -> dict[str, Any]:
    """Samples, and in percent the top functions by own (leaf) samples and fnrelay's own
    functions by inclusive samples."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    if not path.exists():
        return {"samples": 0, "own": [], "inclusive": []}
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit() or not stack:
            continue
        n = int(count)
        raw = [f for f in stack.split(";") if not f.startswith("process ")]
        if not raw:
            continue
        total += n
        own[_frame(raw[-1])] += n
        for f in {_frame(f) for f in raw if _ours(f)}:
            incl[f] += n

    def pct(c: Counter[str]) -> list[list[Any]]:
        return [[f, round(100 * n / total, 1)] for f, n in c.most_common(top)]

    return {"samples": total, "own": pct(own), "inclusive": pct(incl)} if total else {
        "samples": 0, "own": [], "inclusive": []}
