"""What ``fnrelay task show`` and ``task list`` print of a task, apart from the command.

A task's record holds its result serialized; showing the value means deserializing it here,
which may fail where the value's classes are not importable: the report then says so
instead of failing. Output tails come from the result's details, where every engine puts
what the task printed (``stdout_tail``, ``stderr_tail``).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import TYPE_CHECKING, Any

from fnrelay.wire import TaskState

if TYPE_CHECKING:
    from fnrelay.client import Client

STATES = tuple(s.value for s in TaskState)
_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_when(text: str | None, option: str) -> float | None:
    """Epoch seconds of an age ("30m": thirty minutes ago) or an ISO date/time (local time
    unless it names its zone); ValueError naming `option` for anything else."""
    if text is None:
        return None
    age = _AGE.match(text.strip())
    if age:
        return time.time() - float(age.group(1)) * _UNIT[age.group(2)]
    try:
        return dt.datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise ValueError(f"{option}: {text!r} is neither an age (30m, 2h, 1d) nor an ISO "
                         "date/time (2026-01-31 or 2026-01-31T14:00)") from None


def outcome_lines(record: dict[str, Any], client: Client) -> list[str]:
    """The result or error, the return code of a command's result, and the output tails."""
    lines: list[str] = []
    status = record["status"]
    exc = record.get("exception")
    if status == TaskState.SUCCESS.value:
        lines += _value_lines(record, client)
    elif exc:
        lines.append(f"error     {exc.get('type')}: {exc.get('message')}")
        if exc.get("traceback"):
            lines += ["", "traceback:", *_indent(exc["traceback"])]
    details = record.get("details") or {}
    if "exit_code" in details and details["exit_code"] is not None:
        lines.append(f"exit code {details['exit_code']} (of the batch job)")
    for stream in ("stdout", "stderr"):
        text = details.get(f"{stream}_tail")
        if text:
            lines += ["", f"{stream} (last lines):", *_indent(text)]
    return lines


def _value_lines(record: dict[str, Any], client: Client) -> list[str]:
    from fnrelay.client import record_outcome  # here: the CLI imports this module at start


    try:
        ok, value = record_outcome(record, client)
    except Exception as e:  # noqa: BLE001 - a value this machine cannot rebuild is still shown
        return [f"result    (cannot be deserialized here: {type(e).__name__}: {e})"]
    if not ok:
        return [f"result    (cannot be deserialized here: {value})"]
    code = getattr(value, "returncode", None)
    if isinstance(code, int):  # a ShellFunction's or MPIFunction's result
        lines = [f"returncode {code}"]
        for stream in ("stdout", "stderr"):
            text = getattr(value, stream, "")
            if isinstance(text, str) and text.strip():
                lines += ["", f"command {stream}:", *_indent(text)]
        return lines
    text = repr(value)
    return ["result:", *_indent(text)] if "\n" in text else [f"result    {text}"]


def _indent(text: str, lines: int = 40) -> list[str]:
    """The last `lines` lines of `text`, indented."""
    return ["  " + line for line in text.rstrip("\n").splitlines()[-lines:]]
