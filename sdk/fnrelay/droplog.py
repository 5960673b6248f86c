"""One log line per interval for messages an Executor drops, however many arrive.

Anyone who can put messages in a task group's queue (at worst a granted endpoint gone bad)
could otherwise fill the user's terminal and log files with one WARNING per message.
"""

from __future__ import annotations

import logging
import threading
import time

#: Seconds between two WARNINGs about dropped messages.
INTERVAL = 60.0


class DropLog:
    """Counts dropped messages; logs the first at once and then a summary per interval."""

    def __init__(self, log: logging.Logger, interval: float = INTERVAL):
        self._log, self._interval = log, interval
        self._lock = threading.Lock()
        self._next = 0.0
        self._count = 0

    def note(self, what: str) -> None:
        """Record one dropped message, `what` saying which and why."""
        with self._lock:
            self._count += 1
            t = time.monotonic()
            if t < self._next:
                return
            count, self._count, self._next = self._count, 0, t + self._interval
        more = f" ({count - 1} more dropped since the last report)" if count > 1 else ""
        self._log.warning("dropping %s%s; further drops are reported at most every %gs",
                          what, more, self._interval)
