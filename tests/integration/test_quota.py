"""The per-user quota of unfinished tasks (broker `--max-queued-per-user`): a submit beyond it
is refused whole with a retryable 429 naming the limit; other users are not affected; the
Executor waits and sends again, so none of its tasks is lost.

A broker of this module's own (own virtual host, no per-party accounts, so every submit goes
through the broker, where the quota is counted) with a quota of 4.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fnrelay import Client, Executor, errors
from fnrelay.devstack.services import BrokerServer, LocalEndpoint
from support.waiting import wait_for

MARKER = "fnrelay-test-quota"
QUOTA = 4


def double(x):
    return 2 * x


def slow_double(x):
    import time

    time.sleep(0.2)
    return 2 * x


@dataclass
class QuotaStack:
    broker: BrokerServer
    tmp: Path

    def user(self) -> tuple[Client, str]:
        token = self.broker.add_user(f"quota-{uuid.uuid4().hex[:6]}")
        return Client(self.broker.url, token), token

    def endpoint(self, token: str, start: bool) -> LocalEndpoint:
        ep = LocalEndpoint(self.tmp / f"ep-{uuid.uuid4().hex[:6]}", "quota", self.broker.url,
                           token, marker=MARKER).configure(max_workers=2)
        if start:
            ep.start(foreground=True)
        return ep


@pytest.fixture(scope="module")
def stack(tmp_path_factory, new_vhost) -> Iterator[QuotaStack]:
    tmp = tmp_path_factory.mktemp("quota")
    broker = BrokerServer(tmp / "broker", new_vhost("fnrelay-quota"), marker=MARKER,
                          extra_args=["--heartbeat-period", "1",
                                      "--max-queued-per-user", str(QUOTA)])
    broker.start()
    yield QuotaStack(broker, tmp)
    broker.stop()


def _stopped_endpoint(stack: QuotaStack, token: str) -> str:
    """An endpoint registered and stopped: tasks sent to it stay unfinished."""
    ep = stack.endpoint(token, start=True)
    ep.stop()
    return ep.endpoint_id


def test_submit_beyond_the_quota_is_refused_at_once_and_stores_nothing(stack):
    alice, alice_token = stack.user()
    eid = _stopped_endpoint(stack, alice_token)
    fid = alice.register_function(double)
    for i in range(QUOTA - 1):
        alice.run(i, endpoint_id=eid, function_id=fid)
    batch = alice.create_batch()
    for i in range(2):  # one fits, two do not: the request is refused whole
        batch.add(fid, args=(i,))
    started = time.monotonic()
    with pytest.raises(errors.QuotaExceededError) as refused:
        alice.batch_run(eid, batch)
    # Answered, not retried in silence by the HTTP layer (globus-sdk would wait ~30 s).
    assert time.monotonic() - started < 10
    message = str(refused.value)
    assert f"limit of {QUOTA} per user" in message and f"you have {QUOTA - 1}" in message
    assert refused.value.http_status == 429 and refused.value.retry_after > 0
    assert len(alice.list_tasks(endpoint_id=eid)) == QUOTA - 1

    alice.run(QUOTA, endpoint_id=eid, function_id=fid)  # the last one that fits
    with pytest.raises(errors.QuotaExceededError):
        alice.run(0, endpoint_id=eid, function_id=fid)


def test_another_users_submits_are_not_limited_by_alices_tasks(stack):
    alice, alice_token = stack.user()
    eid = _stopped_endpoint(stack, alice_token)
    fid = alice.register_function(double)
    for i in range(QUOTA):
        alice.run(i, endpoint_id=eid, function_id=fid)
    with pytest.raises(errors.QuotaExceededError):
        alice.run(0, endpoint_id=eid, function_id=fid)

    bob, bob_token = stack.user()
    ep = stack.endpoint(bob_token, start=True)
    try:
        bfid = bob.register_function(double)
        task_id = bob.run(21, endpoint_id=ep.endpoint_id, function_id=bfid)
        assert wait_for(lambda: bob.get_task(task_id)["status"] == "success" and
                        bob.get_result(task_id), "bob's task") == 42
    finally:
        ep.stop()


def test_cancelling_unfinished_tasks_frees_the_quota(stack):
    alice, alice_token = stack.user()
    eid = _stopped_endpoint(stack, alice_token)
    fid = alice.register_function(double)
    ids = [alice.run(i, endpoint_id=eid, function_id=fid) for i in range(QUOTA)]
    with pytest.raises(errors.QuotaExceededError):
        alice.run(0, endpoint_id=eid, function_id=fid)
    alice.cancel(ids[0])
    wait_for(lambda: alice.task_record(ids[0])["status"] == "cancelled", "the cancel")
    alice.run(0, endpoint_id=eid, function_id=fid)


def test_executor_waits_for_the_quota_and_loses_no_task(stack, caplog):
    alice, alice_token = stack.user()
    ep = stack.endpoint(alice_token, start=True)
    n = 3 * QUOTA
    try:
        with caplog.at_level(logging.WARNING, logger="fnrelay.executor.submitter"), \
                Executor(endpoint_id=ep.endpoint_id, client=alice, batch_size=QUOTA) as ex:
            futures = [ex.submit(slow_double, i) for i in range(n)]
            done, _ = cf.wait(futures, timeout=120)
        assert len(done) == n
        assert sorted(f.result() for f in futures) == [2 * i for i in range(n)]
    finally:
        ep.stop()
    refusals = [r.getMessage() for r in caplog.records if "per user" in r.getMessage()]
    assert refusals, "the broker never refused: the test did not exercise the quota"
    assert "futures stay pending" in refusals[0]
    # Each task ran once: the refused requests stored nothing.
    assert len(alice.list_tasks(endpoint_id=ep.endpoint_id)) == n
