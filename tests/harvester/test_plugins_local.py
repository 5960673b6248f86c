"""The Harvester plugins against a real broker and a real endpoint (local engine)."""

from __future__ import annotations

import socket
from pathlib import Path

from workspec import WorkSpec

from fnrelay.harvester import FnRelayMonitor, FnRelaySubmitter, FnRelaySweeper


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_five_workers_submitted_in_one_batch_run_to_finished(client, queue_config, make_worker,
                                                              watch):
    workers = [make_worker() for _ in range(5)]
    results = FnRelaySubmitter(**queue_config).submit_workers(workers)

    assert results == [(True, "")] * 5
    task_ids = [w.batchID for w in workers]
    assert len(set(task_ids)) == 5
    groups = {client.task_record(t)["task_group_id"] for t in task_ids}
    assert len(groups) == 1  # one submit request carried all five
    assert all(w.submissionHost == queue_config["broker_url"] for w in workers)
    remote_names = {i["remote_name"] for w in workers for i in w.logFilesToUpload.values()}
    assert len(remote_names) == 10  # stdout and stderr of each worker, no collisions

    watch(FnRelayMonitor(**queue_config), workers)
    for w in workers:
        assert w.status == WorkSpec.ST_finished
        assert (w.nativeStatus, w.nativeExitCode) == ("success", 0)
        out = Path(w.log_file("stdout"))
        assert out.parent == Path(w.accessPoint)
        assert out.read_text() == f"pilot {w.workerID} at {w.accessPoint}\n"
        assert Path(w.log_file("stderr")).read_text() == ""


def test_failing_worker_reported_failed_with_its_stderr(queue_config, make_worker, watch):
    config = {**queue_config,
              "executable": "echo starting {workerID}; echo 'pilot {workerID} broke' >&2; exit 3"}
    good, bad = make_worker(), make_worker()
    config_ok = {**queue_config, "executable": "true"}
    assert FnRelaySubmitter(**config_ok).submit_workers([good]) == [(True, "")]
    assert FnRelaySubmitter(**config).submit_workers([bad]) == [(True, "")]

    watch(FnRelayMonitor(**queue_config), [good, bad])

    assert good.status == WorkSpec.ST_finished
    assert bad.status == WorkSpec.ST_failed
    assert (bad.nativeStatus, bad.nativeExitCode) == ("success", 3)
    assert Path(bad.log_file("stderr")).read_text() == f"pilot {bad.workerID} broke\n"
    assert Path(bad.log_file("stdout")).read_text() == f"starting {bad.workerID}\n"
    assert "exited with 3" in bad.diagMessage and "broke" in bad.diagMessage


def test_killed_worker_reported_cancelled_and_swept(queue_config, make_worker, watch):
    config = {**queue_config, "executable": "echo up; sleep 300"}
    worker = make_worker()
    assert FnRelaySubmitter(**config).submit_workers([worker]) == [(True, "")]
    monitor = FnRelayMonitor(**queue_config)
    watch(monitor, [worker], until=lambda w: w.status == WorkSpec.ST_running)

    sweeper = FnRelaySweeper(**queue_config)
    assert sweeper.kill_workers([worker]) == [(True, "")]
    watch(monitor, [worker])
    assert worker.status == WorkSpec.ST_cancelled
    assert worker.nativeStatus == "cancelled"
    assert Path(worker.accessPoint).is_dir()

    assert sweeper.sweep_worker(worker) == (True, "")
    assert not Path(worker.accessPoint).exists()
    # Killing again is harmless: the task is already over.
    assert sweeper.kill_worker(worker) == (True, "")


def test_broker_unreachable_is_unknown_not_failed(queue_config, make_worker):
    dead = {**queue_config, "broker_url": f"http://127.0.0.1:{_free_port()}", "max_retries": 0}
    worker = make_worker(batchID="0b7a1f3e-8c1a-4a55-9a6e-3f0f3a1f0b11", status="running")

    ok, answers = FnRelayMonitor(**dead).check_workers([worker, worker])
    assert ok is True
    assert [status for status, _ in answers] == [None, None]
    assert "cannot reach the broker" in answers[0][1]
    assert worker.status == "running"

    fresh = [make_worker(), make_worker()]
    results = FnRelaySubmitter(**dead).submit_workers(fresh)
    assert [ok for ok, _ in results] == [None, None]  # temporary: Harvester retries them
    assert all(w.batchID is None for w in fresh)

    ok, message = FnRelaySweeper(**dead).kill_worker(worker)
    assert ok is False and "will retry" in message


def test_template_values_are_shell_quoted(queue_config, make_worker, watch, tmp_path):
    marker = tmp_path / "pwned"
    hostile = f"x; touch {marker}; $(touch {marker}) `touch {marker}`"
    config = {**queue_config, "executable": "printf '%s|%s\\n' {computingSite} {jobType}"}
    worker = make_worker(computingSite=hostile, jobType="it's \"quoted\" & {workerID}")

    assert FnRelaySubmitter(**config).submit_workers([worker]) == [(True, "")]
    watch(FnRelayMonitor(**queue_config), [worker])

    assert worker.status == WorkSpec.ST_finished
    assert Path(worker.log_file("stdout")).read_text() == \
        f"{hostile}|it's \"quoted\" & {{workerID}}\n"
    assert not marker.exists()


def test_refused_worker_does_not_stop_the_others(client, queue_config, make_worker, watch):
    workers = [make_worker(), make_worker(nCore=0), make_worker(accessPoint=None),
               make_worker()]
    results = FnRelaySubmitter(**queue_config).submit_workers(workers)

    assert [ok for ok, _ in results] == [True, False, False, True]
    assert "nCore" in results[1][1] and "accessPoint" in results[2][1]
    assert workers[1].batchID is None and workers[2].batchID is None
    watch(FnRelayMonitor(**queue_config), [workers[0], workers[3]])
    assert workers[0].status == workers[3].status == WorkSpec.ST_finished


def test_unknown_template_field_refuses_every_worker(queue_config, make_worker):
    config = {**queue_config, "executable": "pilot --site {site}"}
    results = FnRelaySubmitter(**config).submit_workers([make_worker(), make_worker()])
    assert [ok for ok, _ in results] == [False, False]
    assert "{site}" in results[0][1]


def test_monitor_reports_a_task_the_broker_does_not_know_as_failed(queue_config, make_worker):
    worker = make_worker(batchID="6f1c2d3e-0000-4000-8000-000000000000")
    ok, answers = FnRelayMonitor(**queue_config).check_workers([worker])
    assert ok is True
    assert answers[0][0] == WorkSpec.ST_failed and "unknown" in answers[0][1]
