"""What the chaos tests check after their faults: every task ended, and ended exactly once in
the broker's own database."""

from __future__ import annotations

import sqlite3
from typing import Any
from urllib.parse import urlsplit

TERMINAL = ("success", "failed", "cancelled")


def statuses(client: Any, ids: list[str]) -> dict[str, str] | None:
    """task id -> status; None while the broker does not answer (it may be restarting)."""
    out = {}
    for start in range(0, len(ids), 1000):
        try:
            answer = client.get_tasks(ids[start:start + 1000])
        except Exception:  # noqa: BLE001 - the broker may be restarting
            return None
        out.update({tid: rec["status"] for tid, rec in answer["tasks"].items()})
    return out


def terminal_rows(db_url: str) -> dict[str, int]:
    """task id -> number of terminal history rows, read from the broker's own database."""
    path = urlsplit(db_url.replace("sqlite:///", "sqlite:////", 1)).path
    with sqlite3.connect(path) as db:
        return dict(db.execute(
            "SELECT task_id, COUNT(*) FROM task_history WHERE status IN (?, ?, ?) "
            "GROUP BY task_id", TERMINAL).fetchall())
