"""Endpoint figures come from heartbeats, the endpoint owner's words: the state names that
become /metrics label values are checked and capped, so one tenant cannot fill the operators'
Prometheus with series."""

from __future__ import annotations

import time
from types import SimpleNamespace

from fnrelay_broker.figures import MAX_STATES, endpoint_families


def _samples(details: dict) -> dict[str, list]:
    ep = SimpleNamespace(id="e1", name="ep", last_heartbeat=time.time(), state="online",
                         details=details)
    return {f.name: f.samples for f in endpoint_families([(ep, "alice")], 30.0)}


def test_job_and_journal_states_are_names_and_few() -> None:
    flood = {f"STATE{i}": 1 for i in range(1000)}
    samples = _samples({"engine": "batch", "jobs_by_state": {
        "PENDING": 2, "RUNNING": 1, 'x",evil="1': 5, "": 3, **flood},
        "journal": {"tasks": {"queued": 4, "running": 1, **flood}}})
    jobs = {s.labels["state"]: s.value for s in samples["fnrelay_endpoint_batch_jobs"]}
    assert jobs["PENDING"] == 2 and jobs["RUNNING"] == 1
    assert len(jobs) == MAX_STATES and 'x",evil="1' not in jobs and "" not in jobs
    journal = {s.labels["state"] for s in samples["fnrelay_endpoint_journal_tasks"]}
    assert {"queued", "running"} <= journal and len(journal) == MAX_STATES
