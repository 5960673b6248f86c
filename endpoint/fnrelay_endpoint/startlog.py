"""What a background start tells the terminal: this start's warnings and errors from
endpoint.log as they are written, never lines of earlier runs (the log is appended to).

Without it `fnrelay-endpoint start` against an unreachable broker was silent until the agent
gave up (about 22 s), and then showed the log's last lines, earlier runs' among them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

#: A record as daemon._setup_logging formats it: time, level, logger, message.
_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ([A-Z]+) [\w.]+: (.*)$")
_QUIET_LEVELS = {"DEBUG", "INFO"}


class StartLog:
    """endpoint.log from its size at creation on, read in whole lines; warnings and errors
    go to `report` (None: nowhere, and `failed` then quotes this start's lines)."""

    def __init__(self, path: Path, report: Callable[[str], None] | None = None):
        self.path, self.report = path, report
        try:
            self.offset = path.stat().st_size
        except OSError:
            self.offset = 0
        self.lines: list[str] = []  # this start's lines so far

    def read(self) -> list[str]:
        """The whole lines written since the last call."""
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        complete = data[:data.rfind(b"\n") + 1]
        self.offset += len(complete)
        new = complete.decode(errors="replace").splitlines()
        self.lines += new
        return new

    def relay(self) -> None:
        """Pass on the new warnings and errors (and lines that are no log record, such as a
        traceback), each as `level: message`."""
        for line in self.read():
            if self.report is None:
                continue
            record = _parse(line)
            if record is None:
                if line.strip():
                    self.report(line)
            elif record[0] not in _QUIET_LEVELS:
                self.report(f"{record[0].lower()}: {record[1]}")

    def failed(self, name: str, lines: int = 20) -> str:
        """Why the start of endpoint `name` failed: what `report` has not shown yet."""
        self.relay()
        if self.report is not None:
            return f"endpoint {name!r} did not start (its log: {self.path})"
        return (f"endpoint {name!r} did not start (see {self.path}); its log lines of this "
                "start:\n" + "\n".join(self.lines[-lines:]))


def _parse(line: str) -> tuple[str, str] | None:
    """(level, message) of a record in either log format (fnrelay.logformat), else None."""
    if line.startswith("{"):
        try:
            record = json.loads(line)
        except ValueError:
            return None
        if isinstance(record, dict) and {"level", "message"} <= record.keys():
            return str(record["level"]), str(record["message"])
        return None
    match = _RECORD.match(line)
    return (match.group(1), match.group(2)) if match else None
