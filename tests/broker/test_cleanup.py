"""Task and result time-to-live: the broker deletes finished tasks `--result-ttl` seconds
after they finished, and keeps unfinished ones however old."""

from __future__ import annotations

import pytest

from fnrelay import wire
from support.endpoint_peer import send_result
from support.waiting import wait_for


@pytest.fixture(scope="module")
def amqp_url(new_vhost) -> str:  # type: ignore[no-untyped-def]
    """A virtual host of this module's broker alone."""
    return new_vhost("fnrelay-cleanup-test")


@pytest.fixture(scope="module")
def ttl_broker(start_broker, amqp_url):  # type: ignore[no-untyped-def]
    return start_broker(amqp_url, None, "--result-ttl", "1")


def test_finished_tasks_expire_and_pending_ones_stay(ttl_broker, amqp_url):
    api = ttl_broker.api()
    eid = api.endpoint()
    fn = api.function()
    first = api.submit(eid, fn)
    done, group = first["task_ids"][0], first["task_group_id"]
    pending = api.submit(eid, fn)["task_ids"][0]
    send_result(amqp_url, eid, done, group, "done")
    wait_for(lambda: api("GET", f"/tasks/{done}").status_code == 404,
             "the finished task to be deleted after its ttl")
    # The unfinished task is older than the ttl too, and it stays.
    r = api("GET", f"/tasks/{pending}")
    assert r.status_code == 200
    assert not wire.TaskState(r.json()["status"]).terminal
