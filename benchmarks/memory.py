"""Memory of the broker and endpoint processes: current and peak RSS, and the database size.

Peak RSS is the kernel's high-water mark (VmHWM in /proc/PID/status), so it covers the whole
life of the process, not only the moments we sample.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MB = 1024 * 1024


def _status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _children(pid: int) -> list[int]:
    """All descendants of `pid` (psutil if installed, else /proc)."""
    try:
        import psutil

        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except ImportError:
        pass
    except Exception:  # noqa: BLE001 - the process is gone
        return []
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        found += kids
        frontier += kids
    return found


def rss_mb(pid: int) -> float | None:
    kb = _status_kb(pid, "VmRSS")
    return kb / 1024 if kb is not None else None


def peak_rss_mb(pid: int) -> float | None:
    kb = _status_kb(pid, "VmHWM")
    return kb / 1024 if kb is not None else None


def process_memory(pid: int) -> dict[str, Any]:
    """RSS and peak RSS of `pid` alone, and the RSS of it plus its descendants (workers)."""
    kids = _children(pid)
    tree = [rss_mb(p) for p in [pid, *kids]]
    return {"pid": pid, "rss_mb": rss_mb(pid), "peak_rss_mb": peak_rss_mb(pid),
            "children": len(kids), "tree_rss_mb": sum(x for x in tree if x is not None)}


def db_size_mb(db_path: Path | None) -> float | None:
    """SQLite database size including its WAL and shared-memory files."""
    if db_path is None:
        return None
    files = [db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")]
    return sum(f.stat().st_size for f in files if f.exists()) / MB
