"""The submit hand-off: a fast path that never publishes a task twice and never loses one.

A real OutboxPublisher thread on a fresh RabbitMQ virtual host and a real SQLite database: the
request hands its committed messages to the publisher; the outbox rows stay the guarantee.
"""

from __future__ import annotations

import uuid

import pika
import pytest

from fnrelay import protocol
from fnrelay_broker import registry, tasks
from fnrelay_broker.amqp import declare_endpoint_queue, declare_exchanges
from fnrelay_broker.auth import CurrentUser, create_user
from fnrelay_broker.db import Database
from fnrelay_broker.routing import OutboxPublisher
from support.waiting import wait_for


@pytest.fixture
def setup(tmp_path, new_vhost):  # type: ignore[no-untyped-def]
    url = new_vhost("fnrelay-handoff")
    db = Database(f"sqlite:///{tmp_path / 'broker.db'}")
    db.migrate()
    uid, _ = create_user(db, "alice")
    user = CurrentUser(id=uid, username="alice")
    ep = str(uuid.uuid4())
    registry.register_endpoint(db, user, ep, "ep", {})
    fid = registry.register_function(db, user, "04\nbody", "f", None)
    publisher = OutboxPublisher(db, url)
    publisher.start()
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    declare_exchanges(ch)
    declare_endpoint_queue(ch, ep)  # as endpoint registration does
    yield db, user, ep, fid, publisher, ch
    conn.close()
    publisher.stop()


def _submit(setup, handoff):  # type: ignore[no-untyped-def]
    db, user, ep, fid, _, _ = setup
    answer = tasks.submit(db, user, str(uuid.uuid4()), ep, None,
                          [{"function_id": fid, "payload": "03\n1"}], handoff=handoff)
    return answer["task_ids"][0]


def _next_task_ids(ch, endpoint_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    def poll():  # type: ignore[no-untyped-def]
        method, _, body = ch.basic_get(protocol.endpoint_queue(endpoint_id), auto_ack=True)
        return None if method is None else [t["task_id"] for t in protocol.decode(body)["tasks"]]
    return wait_for(poll, "a tasks message on the endpoint queue")


def _outbox_empty(db) -> bool:  # type: ignore[no-untyped-def]
    return not tasks.read_outbox(db, 10)


def test_handed_off_task_is_published_and_advanced(setup):
    db, user, ep, _, publisher, ch = setup
    task_id = _submit(setup, publisher.handoff)
    assert _next_task_ids(ch, ep) == [task_id]
    wait_for(lambda: _outbox_empty(db), "the outbox row to be deleted")
    assert tasks.task_record(db, user, task_id)["status"] == "waiting-for-endpoint"


def test_a_lost_hand_off_still_goes_out_with_the_outbox(setup):
    db, _, ep, _, publisher, ch = setup
    task_id = _submit(setup, handoff=None)  # as if the hand-off never arrived
    publisher.wake()
    assert _next_task_ids(ch, ep) == [task_id]


def test_a_late_hand_off_of_published_rows_sends_nothing(setup):
    db, _, ep, _, publisher, ch = setup
    held = []
    first = _submit(setup, held.append)  # hand-off held back; the outbox round sends it
    publisher.wake()
    assert _next_task_ids(ch, ep) == [first]
    wait_for(lambda: _outbox_empty(db), "the outbox row to be deleted")
    # The next task is committed before the late hand-off is looked at: on SQLite its outbox
    # row takes the id of the deleted one, so the late hand-off finds a row under its id.
    second = _submit(setup, held.append)
    publisher.handoff(held[0])  # arrives late: its row is gone, so it must send nothing
    publisher.handoff(held[1])
    assert _next_task_ids(ch, ep) == [second]
    method, _, _ = ch.basic_get(protocol.endpoint_queue(ep), auto_ack=True)
    assert method is None, "the late hand-off published its task a second time"
