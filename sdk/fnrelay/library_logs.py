"""Libraries' own log records from threads that report the same trouble themselves.

pika logs each failed connection attempt as seven ERROR records and a traceback, and
globus-sdk each failed request at WARNING. The Executor's threads tell their user about an
outage themselves, once, at WARNING, naming the service; from those threads the libraries'
records are DEBUG instead: still there for whoever debugs the library, not a wall of red in a
notebook. Other threads (the user's own calls) are untouched.

A logger decides whether a record is wanted (`isEnabledFor(record's level)`) before its filters
run, and its handlers (basicConfig's among them, at NOTSET) check only their own level. So a
filter that merely relabels an ERROR as DEBUG lets it through wherever ERROR was enabled. The
filter here makes the decision again, for DEBUG: the record goes on, as DEBUG, only when the
logger it was made by is enabled for DEBUG, and is dropped otherwise.
"""

from __future__ import annotations

import logging
import threading

#: The loggers (and their children) whose records are demoted in a reporting thread.
LIBRARIES = ("pika", "globus_sdk.transport")

_reporting = threading.local()


class _DemoteInReportingThreads(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.DEBUG or not getattr(_reporting, "on", False):
            return True
        # The level check the logger made was for the record's own level; DEBUG's is this one.
        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


_DEMOTE = _DemoteInReportingThreads()


def reports_its_own_errors() -> None:
    """Mark the calling thread as one that reports connection trouble itself.

    A logger's filter sees only that logger's own records, so the filter goes on each logger
    of LIBRARIES that exists: call this after importing them (the modules create their loggers
    at import)."""
    _reporting.on = True
    for name in list(logging.root.manager.loggerDict):
        if any(name == lib or name.startswith(lib + ".") for lib in LIBRARIES):
            logger = logging.getLogger(name)
            if _DEMOTE not in logger.filters:
                logger.addFilter(_DEMOTE)
