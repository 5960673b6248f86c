"""The endpoint journal: what a restart re-runs and re-publishes, and what it never runs."""

from __future__ import annotations

from pathlib import Path

from fnrelay.wire import ResultMessage, TaskMessage, new_id
from fnrelay_endpoint.agent.journal import Journal


def task(task_id: str | None = None) -> TaskMessage:
    return TaskMessage(task_id=task_id or new_id(), function_id="f", function="03\nnull",
                       payload="03\n[[],{}]", task_group_id="g")


def success(task_id: str, value: str = "03\n1") -> ResultMessage:
    return ResultMessage(task_id=task_id, status="success", result=value, task_group_id="g")


def test_unfinished_tasks_survive_a_restart_in_arrival_order(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    j = Journal(path)
    tasks = [task() for _ in range(3)]
    to_run, to_publish = j.add_tasks(tasks)
    assert [t.task_id for t in to_run] == [t.task_id for t in tasks] and to_publish == []
    j.mark_running([tasks[0].task_id])
    j.store_results([success(tasks[1].task_id)])
    j.close()

    j = Journal(path)
    assert j.unfinished() == [tasks[0], tasks[2]]  # the running one too: it died with us
    assert [r.task_id for r in j.unpublished()] == [tasks[1].task_id]


def test_arrival_order_continues_across_a_restart(tmp_path: Path) -> None:
    """Task ids sort the other way round on purpose: only the arrival order may decide."""
    path = tmp_path / "journal.sqlite"
    j = Journal(path)
    first = [task(f"z{i}") for i in range(3)]
    j.add_tasks(first[:2])
    j.add_tasks(first[2:])
    j.close()
    j = Journal(path)
    later = [task(f"a{i}") for i in range(2)]
    j.add_tasks(later)
    assert [t.task_id for t in j.unfinished()] == [t.task_id for t in first + later]


def test_published_results_are_not_sent_again(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    t = task()
    j.add_tasks([t])
    j.store_results([success(t.task_id)])
    j.mark_published([t.task_id])
    j.close()
    j = Journal(tmp_path / "j.sqlite")
    assert j.unpublished() == [] and j.unfinished() == []


def test_redelivered_task_is_not_run_twice(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    t = task()
    j.add_tasks([t])
    assert j.add_tasks([t]) == ([], [])  # still queued or running: it already runs

    j.store_results([success(t.task_id, "03\n42")])
    j.mark_published([t.task_id])
    to_run, to_publish = j.add_tasks([t])  # done: re-publish the stored result instead
    assert to_run == []
    assert [(r.task_id, r.result) for r in to_publish] == [(t.task_id, "03\n42")]


def test_cancel_before_the_task_arrives_means_it_never_runs(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    t = task()
    assert j.cancel(t.task_id) is None  # unknown yet: tombstone
    to_run, to_publish = j.add_tasks([t, task("other")])
    assert [x.task_id for x in to_run] == ["other"]
    assert [(r.task_id, r.status) for r in to_publish] == [(t.task_id, "cancelled")]
    assert [r.task_id for r in j.unpublished()] == [t.task_id]  # spooled until confirmed


def test_cancel_reports_the_state_of_a_known_task(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    a, b = task(), task()
    j.add_tasks([a, b])
    j.mark_running([a.task_id])
    assert j.cancel(a.task_id) == "running"
    assert j.cancel(b.task_id) == "queued"


def test_first_result_wins(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    t = task()
    j.add_tasks([t])
    assert len(j.store_results([success(t.task_id, "03\n1")])) == 1
    late = ResultMessage(task_id=t.task_id, status="cancelled")
    assert j.store_results([late]) == []
    assert [r.result for r in j.unpublished()] == ["03\n1"]


def test_prune_forgets_only_old_published_results(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    done, pending, unsent = task(), task(), task()
    j.add_tasks([done, pending, unsent])
    j.store_results([success(done.task_id), success(unsent.task_id)])
    j.mark_published([done.task_id])
    assert j.prune(older_than=-1) == 1
    assert j.state(done.task_id) is None
    assert [t.task_id for t in j.unfinished()] == [pending.task_id]
    assert [r.task_id for r in j.unpublished()] == [unsent.task_id]


def test_sync_fsyncs_the_file_that_holds_unsynced_commits(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Tasks journaled without an fsync (the Acker's way) become durable with `sync()`: in WAL
    mode the commit is in the -wal file, and that is the file synced."""
    import os

    j = Journal(tmp_path / "j.sqlite")
    assert j.wal
    synced: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")),
                                                 real_fsync(fd)))
    t = task()
    assert j.add_tasks([t], durable=False)[0] == [t]
    assert synced == []  # the commit itself did not wait for the disk
    j.sync()
    assert synced == [str(tmp_path / "j.sqlite-wal")]
    j.close()
    assert Journal(tmp_path / "j.sqlite").unfinished() == [t]


def test_deferred_checkpoints_run_in_sync_not_in_commits(tmp_path: Path) -> None:
    """With checkpoints deferred (the agent's I/O thread must not copy the -wal), commits
    leave everything in the -wal; the next sync copies it into the database file."""
    path = tmp_path / "journal.sqlite"
    j = Journal(path)
    j.defer_checkpoints()
    big = "x" * 20_000
    for _ in range(300):  # ~6 MB: past SQLite's automatic checkpoint at 1,000 pages
        j.add_tasks([TaskMessage(task_id=new_id(), function_id="f", function=big,
                                 payload="03\n[[],{}]")], durable=False)
    before = path.stat().st_size
    assert before < 1_000_000 and Path(f"{path}-wal").stat().st_size > 5_000_000
    j.sync()
    assert path.stat().st_size > 5_000_000
    assert len(j.unfinished()) == 300
    j.close()
