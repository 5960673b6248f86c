"""How the daemons (broker, endpoint, its children) format their logs: text, or one JSON
object per line for log collectors (Loki, Elasticsearch, journald's JSON readers).

A JSON line has `time` (ISO 8601, UTC), `level`, `logger` and `message`, plus the ids of the
task and the endpoint it is about where there are some: given to one call with
`extra={"task_id": ...}`, or for everything logged inside `about(...)` (a context variable,
so each thread and each asyncio task keeps its own). The ids are fields, not text to parse.

The format comes from the daemon's `--log-format` option or, for processes a daemon starts
(the endpoint's background agent, a multi-user endpoint's children), FNRELAY_LOG_FORMAT.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone

ENV_LOG_FORMAT = "FNRELAY_LOG_FORMAT"
FORMATS = ("text", "json")
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The ids a line may carry, in the order they are written.
ID_FIELDS = ("task_id", "endpoint_id", "task_group_id")

_ids: ContextVar[dict[str, str] | None] = ContextVar("fnrelay_log_ids", default=None)
#: Ids every line of this process names (an endpoint agent's endpoint): threads start with an
#: empty context, so these cannot live in the context variable.
_process_ids: dict[str, str] = {}


def for_process(**ids: str) -> None:
    """Every line this process logs from now on names these ids (unless a call says else)."""
    _process_ids.update(ids)


@contextmanager
def about(**ids: str | None) -> Iterator[None]:
    """Everything logged inside names these ids (None values are left out)."""
    token = _ids.set({**(_ids.get() or {}), **{k: v for k, v in ids.items() if v}})
    try:
        yield
    finally:
        _ids.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per record; the traceback of `exc_info` as `exception`."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = {**_process_ids, **(_ids.get() or {})}
        for key in ID_FIELDS:
            value = getattr(record, key, None) or context.get(key)
            if value:
                line[key] = str(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, default=str)


def chosen(fmt: str | None = None) -> str:
    """`fmt`, else FNRELAY_LOG_FORMAT, else text; ValueError for another name."""
    name = (fmt or os.environ.get(ENV_LOG_FORMAT) or "text").strip().lower()
    if name not in FORMATS:
        raise ValueError(f"log format {name!r}: use one of {', '.join(FORMATS)}")
    return name


def formatter(fmt: str | None = None) -> logging.Formatter:
    """The formatter of `fmt` (see `chosen`)."""
    return JsonFormatter() if chosen(fmt) == "json" else logging.Formatter(TEXT)


def configure(handlers: list[logging.Handler], level: int | str = logging.INFO,
              fmt: str | None = None) -> None:
    """Send the root logger's records to `handlers`, formatted as `fmt` (see `chosen`)."""
    form = formatter(fmt)
    root = logging.getLogger()
    root.setLevel(level)
    for handler in handlers:
        handler.setFormatter(form)
        root.addHandler(handler)
    logging.getLogger("pika").setLevel(logging.WARNING)
