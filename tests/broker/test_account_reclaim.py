"""Unused RabbitMQ accounts do not pile up: a broker started with `--account-idle 1` deletes a
task group's reader account (and its queue) and a retired child endpoint's account once they
have been idle that long, makes them again on demand, and deletes a manager's children's
accounts with the manager. Real RabbitMQ (its management API says which accounts exist), real
broker, a real endpoint and the SDK's Executor."""

from __future__ import annotations

import uuid
from urllib.parse import quote

import pika
import pytest
import requests

from fnrelay import Client, Executor, wire
from fnrelay.devstack.services import LocalEndpoint
from support.endpoint_peer import send_result
from support.session import MARKER
from support.waiting import wait_for

IDLE = "1"


@pytest.fixture(scope="module")
def amqp_url(new_vhost) -> str:  # type: ignore[no-untyped-def]
    return new_vhost("fnrelay-reclaim-test")


@pytest.fixture(scope="module")
def reclaiming_broker(start_broker, amqp_url, rabbitmq):  # type: ignore[no-untyped-def]
    return start_broker(amqp_url, None, "--amqp-management-url", rabbitmq.management_url,
                        "--account-idle", IDLE, "--heartbeat-period", "1")


class Mgmt:
    """RabbitMQ's management API: which accounts and queues exist."""

    def __init__(self, rabbitmq, amqp_url: str):  # type: ignore[no-untyped-def]
        self.api = rabbitmq.management_url.rstrip("/") + "/api"
        self.auth = rabbitmq.admin_auth
        self.vhost = quote(pika.URLParameters(amqp_url).virtual_host, safe="")

    def _exists(self, path: str) -> bool:
        r = requests.get(f"{self.api}/{path}", auth=self.auth, timeout=10)
        assert r.status_code in (200, 404), r.text
        return r.status_code == 200

    def user(self, name: str) -> bool:
        return self._exists(f"users/{quote(name, safe='')}")

    def queue(self, name: str) -> bool:
        return self._exists(f"queues/{self.vhost}/{quote(name, safe='')}")


@pytest.fixture
def mgmt(rabbitmq, amqp_url) -> Mgmt:  # type: ignore[no-untyped-def]
    return Mgmt(rabbitmq, amqp_url)


def _manager(api) -> dict:  # type: ignore[no-untyped-def]
    """A new multi-user endpoint "mu" of `api`'s user: its registration answer."""
    return api.ok("POST", "/endpoints", json={"name": "mu", "metadata": {"multi_user": True}})


def _child_of(user) -> str:  # type: ignore[no-untyped-def]
    """The one child of manager "mu" the broker made for `user` (its record is the user's)."""
    children = [e["endpoint_id"] for e in user.ok("GET", "/endpoints")["endpoints"]
                if e["name"].startswith("mu/")]
    assert len(children) == 1, children
    return children[0]


def double(x: int) -> int:
    return 2 * x


def test_idle_group_reader_is_deleted_and_made_again_on_reattach(
        reclaiming_broker, mgmt, _workdir):
    token = reclaiming_broker.add_user()
    ep = LocalEndpoint(_workdir / "endpoints" / f"reclaim-{uuid.uuid4().hex[:6]}", "reclaim",
                       reclaiming_broker.url, token, marker=MARKER).configure(max_workers=1)
    ep.start(foreground=True)
    try:
        client = Client(reclaiming_broker.url, token)
        with Executor(ep.endpoint_id, client=client) as ex:
            assert ex.submit(double, 21).result(timeout=60) == 42
            group = ex.task_group_id
            reader = f"fnrelay-group-{group}"
            assert mgmt.user(reader)  # in use (its Executor consumes): kept
        wait_for(lambda: not mgmt.user(reader), "the idle reader account to be deleted")
        queue = reclaiming_broker.names.group(group)
        wait_for(lambda: not mgmt.queue(queue), "its queue to go")
        assert mgmt.user(f"fnrelay-ep-{ep.endpoint_id}")  # endpoints keep theirs

        with Executor(ep.endpoint_id, client=client, task_group_id=group) as again:
            earlier = again.reload_tasks()
            assert [f.result(timeout=60) for f in earlier] == [42]
            assert again.submit(double, 5).result(timeout=60) == 10
            assert mgmt.user(reader)  # made again for the re-attached Executor
            assert again.amqp_connected  # and the result came over it
    finally:
        ep.stop()


def test_retired_child_account_is_deleted_and_made_again(reclaiming_broker, mgmt):
    admin, user = reclaiming_broker.api(), reclaiming_broker.api()
    manager = _manager(admin)["endpoint_id"]
    answer = user.submit(manager, user.function())
    child = _child_of(user)
    path = f"/endpoints/{manager}/children/{child}/credentials"
    creds = admin.ok("POST", path)
    url = creds["amqp_url"]
    account = f"fnrelay-ep-{child}"
    assert mgmt.user(account)
    send_result(url, child, answer["task_ids"][0], answer["task_group_id"], "00\ndone")
    wait_for(lambda: user.ok("GET", f"/tasks/{answer['task_ids'][0]}")["status"] == "success",
             "the child's result to be recorded")
    wait_for(lambda: not mgmt.user(account), "the retired child's account to be deleted")
    assert mgmt.user(f"fnrelay-ep-{manager}")  # the manager keeps its own
    assert mgmt.queue(creds["task_queue"])  # tasks may still come: the queue stays

    # The manager starts the child again: its account is made again, and works.
    again = admin.ok("POST", path)["amqp_url"]
    assert mgmt.user(account)
    pika.BlockingConnection(pika.URLParameters(again)).close()


def test_deleting_a_manager_deletes_its_childrens_accounts(reclaiming_broker, mgmt):
    admin, user = reclaiming_broker.api(), reclaiming_broker.api()
    reg = _manager(admin)
    manager, control = reg["endpoint_id"], reg["control_queue"]
    task = user.submit(manager, user.function())["task_ids"][0]
    child = _child_of(user)
    child_queue = admin.ok("POST", f"/endpoints/{manager}/children/{child}/credentials"
                           )["task_queue"]
    assert mgmt.user(f"fnrelay-ep-{child}")  # busy (an unfinished task): not reclaimed
    assert mgmt.queue(control)

    admin.ok("DELETE", f"/endpoints/{manager}")
    assert not mgmt.user(f"fnrelay-ep-{child}")
    assert not mgmt.user(f"fnrelay-ep-{manager}")
    assert not mgmt.queue(child_queue)
    assert not mgmt.queue(control)
    failed = user.ok("GET", f"/tasks/{task}")
    assert failed["status"] == "failed"
    assert "deleted" in failed["exception"]["message"]


def test_a_group_handed_out_again_is_in_use_before_any_of_its_tasks_is_recorded(task_store):  # type: ignore[no-untyped-def]
    """An Executor re-attaching to an idle group gets a fresh reader account; its first task
    is recorded only later (the direct path's records come batched) and RabbitMQ's consumer
    count lags, so the hand-out itself must keep the account from being reclaimed."""
    import time

    from fnrelay_broker import registry
    from fnrelay_broker.reclaim import idle_groups

    gid = registry.create_task_group(task_store.db, task_store.user, None)
    time.sleep(0.01)
    cutoff = wire.now()
    assert idle_groups(task_store.db, [gid], cutoff) == [gid]  # quiet since the cutoff
    time.sleep(0.01)
    assert registry.create_task_group(task_store.db, task_store.user, gid) == gid  # re-attach
    assert idle_groups(task_store.db, [gid], cutoff) == []


def test_a_child_handed_out_again_is_in_use_before_it_connects(task_store):  # type: ignore[no-untyped-def]
    """A manager starting a retired child gets its credentials made again; the child has no
    recent task or heartbeat and RabbitMQ sees no consumer yet, so the hand-out itself must
    keep the account from being reclaimed before the child connects."""
    import time

    from fnrelay_broker import children
    from fnrelay_broker.models import Endpoint
    from fnrelay_broker.reclaim import idle_children

    manager, child = str(uuid.uuid4()), str(uuid.uuid4())
    with task_store.db.write() as s:
        s.add(Endpoint(id=manager, owner=task_store.user.id, name="mgr",
                       metadata_={"multi_user": True}, state="online", created=0.0))
        s.add(Endpoint(id=child, owner=task_store.user.id, name="mgr/alice/1",
                       metadata_={"parent": manager}, state="offline", created=0.0))
    cutoff = wire.now()
    assert idle_children(task_store.db, [child], cutoff) == [child]  # retired
    time.sleep(0.01)
    children.hand_out(task_store.db, task_store.user, manager, child)
    assert idle_children(task_store.db, [child], cutoff) == []
