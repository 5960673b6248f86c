"""The Executor's records of direct-path tasks for the broker (fnrelay.direct.Records): held
for one message per RECORDS_LINGER, or sent at once when they reach RECORDS_MAX_BYTES."""

from __future__ import annotations

import time

from fnrelay import direct, wire


def _tasks(n: int, payload: str = "03\n[[],{}]") -> list[wire.TaskMessage]:
    return [wire.TaskMessage(task_id=str(i), function_id="f", function="03\nfn",
                                 payload=payload, direct=True) for i in range(n)]


def test_records_wait_for_the_linger_then_go_together(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(direct, "RECORDS_LINGER", 0.2)
    records = direct.Records()
    assert not records.ready() and records.wait(5.0) == 5.0  # nothing held: wait for work
    records.add(_tasks(2))
    assert not records.ready() and 0.0 < records.wait(5.0) <= 0.2
    time.sleep(0.1)
    records.add(_tasks(3))  # the linger counts from the first held task
    assert records.wait(5.0) <= 0.1
    time.sleep(records.wait(5.0) + 0.01)
    assert records.ready() and records.wait(5.0) == 0.0
    assert len(records.take()) == 5
    assert not records.ready() and records.take() == []


def test_records_go_at_once_when_large(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(direct, "RECORDS_MAX_BYTES", 1000)
    records = direct.Records()
    records.add(_tasks(1, payload="x" * 400))
    assert not records.ready()
    records.add(_tasks(1, payload="x" * 600))
    assert records.ready()
