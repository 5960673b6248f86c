"""JSON log lines (fnrelay.logformat), how a background start relays them (StartLog), and
how the broker turns heartbeat details into endpoint figures (figures.endpoint_families)."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest

from fnrelay import logformat
from fnrelay_broker.figures import endpoint_families
from fnrelay_broker.models import Endpoint
from fnrelay_endpoint.startlog import StartLog


def _line(record: logging.LogRecord) -> dict:
    return json.loads(logformat.JsonFormatter().format(record))


def _record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("fnrelay.test", logging.WARNING, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def test_a_line_has_time_level_logger_message_and_the_ids_it_is_about():
    line = _line(_record("task %s", "failed", task_id="t1"))
    assert line["level"] == "WARNING" and line["logger"] == "fnrelay.test"
    assert line["message"] == "task failed" and line["task_id"] == "t1"
    assert line["time"].endswith("Z") and "endpoint_id" not in line
    with logformat.about(endpoint_id="e1", task_id="t2"):
        inner = _line(_record("x"))
        assert (inner["endpoint_id"], inner["task_id"]) == ("e1", "t2")
        assert _line(_record("x", task_id="t3"))["task_id"] == "t3"  # the call's own wins
    assert "endpoint_id" not in _line(_record("x"))


def test_ids_of_the_process_reach_every_thread(monkeypatch):
    monkeypatch.setattr(logformat, "_process_ids", {})
    logformat.for_process(endpoint_id="e9")
    lines: list[dict] = []
    t = threading.Thread(target=lambda: lines.append(_line(_record("x"))))
    t.start()
    t.join()
    assert lines[0]["endpoint_id"] == "e9"


def test_a_traceback_is_one_field_of_one_line():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("l", logging.ERROR, __file__, 1, "failed", (),
                                   sys.exc_info())
    text = logformat.JsonFormatter().format(record)
    assert "\n" not in text
    assert "ValueError: boom" in json.loads(text)["exception"]


def test_the_format_comes_from_the_option_else_the_environment(monkeypatch):
    monkeypatch.delenv(logformat.ENV_LOG_FORMAT, raising=False)
    assert logformat.chosen() == "text"
    monkeypatch.setenv(logformat.ENV_LOG_FORMAT, "JSON")
    assert logformat.chosen() == "json" and logformat.chosen("text") == "text"
    assert isinstance(logformat.formatter(), logformat.JsonFormatter)
    monkeypatch.setenv(logformat.ENV_LOG_FORMAT, "xml")
    with pytest.raises(ValueError, match="use one of text, json"):
        logformat.chosen()


def test_a_background_start_relays_json_warnings_as_it_does_text(tmp_path: Path):
    log = tmp_path / "endpoint.log"
    log.write_text("")
    said: list[str] = []
    start = StartLog(log, said.append)
    with log.open("a") as f:
        for level, msg in (("INFO", "quiet"), ("WARNING", "broker unreachable")):
            f.write(json.dumps({"time": "t", "level": level, "logger": "l", "message": msg})
                    + "\n")
        f.write("2026-01-01 00:00:00,000 ERROR fnrelay_endpoint.agent: it failed\n")
    start.relay()
    assert said == ["warning: broker unreachable", "error: it failed"]


def _endpoint(info: dict) -> tuple[Endpoint, str]:
    ep = Endpoint(id="e1", owner="u1", name="site", state="online", last_heartbeat=None,
                  details=info, created=0.0)
    return ep, "carol"


def _samples(info: dict) -> dict[tuple[str, tuple[str, ...]], float]:
    return {(s.name, tuple(v for k, v in sorted(s.labels.items())
                           if k not in ("endpoint", "endpoint_id", "owner"))): s.value
            for family in endpoint_families([_endpoint(info)], 30.0)
            for s in family.samples}


def test_each_engines_heartbeat_becomes_endpoint_figures():
    batch = _samples({"engine": "batch", "jobs": 3, "submitting": 1, "reconnects": 2,
                      "jobs_by_state": {"submitted": 1, "queued": 1, "running": 1},
                      "journal": {"bytes": 4096, "tasks": {"queued": 2, "done": 7},
                                  "unpublished": 1}})
    assert batch[("fnrelay_endpoint_running_tasks", ())] == 1
    assert batch[("fnrelay_endpoint_queued_tasks", ())] == 3  # submitted, queued, submitting
    assert batch[("fnrelay_endpoint_batch_jobs", ("queued",))] == 1
    assert batch[("fnrelay_endpoint_journal_tasks", ("done",))] == 7
    assert batch[("fnrelay_endpoint_unpublished_results", ())] == 1
    assert batch[("fnrelay_endpoint_reconnects_total", ())] == 2
    assert batch[("fnrelay_endpoint_online", ())] == 0  # no heartbeat time: offline
    parsl = _samples({"engine": "parsl", "running": 4, "queued": 5,
                      "blocks": {"htex": ["1", "2"], "mpi": ["3"]}})
    assert parsl[("fnrelay_endpoint_pilot_blocks", ())] == 3
    assert parsl[("fnrelay_endpoint_running_tasks", ())] == 4
    local = _samples({"engine": "local", "workers": 4, "busy": 1, "queued": 0})
    assert local[("fnrelay_endpoint_workers", ("idle",))] == 3
    # What an endpoint did not send (or sent wrong) is left out, never an error.
    odd = _samples({"engine": "local", "busy": "many", "journal": [1], "reconnects": True})
    assert ("fnrelay_endpoint_running_tasks", ()) not in odd
    assert not any(name.startswith("fnrelay_endpoint_journal") for name, _ in odd)
