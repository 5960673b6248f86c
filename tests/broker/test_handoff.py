"""The submit hand-off: a fast path that never publishes a task twice and never loses one.

A real OutboxPublisher thread on a fresh RabbitMQ virtual host and a real SQLite database: the
request hands its committed messages to the publisher; the outbox rows stay the guarantee.
"""

from __future__ import annotations

import pika
import pytest

from fnrelay import protocol
from fnrelay_broker import tasks
from fnrelay_broker.amqp import declare_endpoint_queue, declare_exchanges
from fnrelay_broker.routing import OutboxPublisher
from support.waiting import wait_for


@pytest.fixture
def setup(task_store, new_vhost):  # type: ignore[no-untyped-def]
    """The task store, its OutboxPublisher thread, and a channel to read the endpoint's queue."""
    url = new_vhost("fnrelay-handoff")
    publisher = OutboxPublisher(task_store.db, url)
    publisher.start()
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    declare_exchanges(ch)
    declare_endpoint_queue(ch, task_store.endpoint_id)  # as endpoint registration does
    yield task_store, publisher, ch
    conn.close()
    publisher.stop()


def _next_task_ids(ch, endpoint_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    def poll():  # type: ignore[no-untyped-def]
        method, _, body = ch.basic_get(protocol.endpoint_queue(endpoint_id), auto_ack=True)
        return None if method is None else [t["task_id"] for t in protocol.decode(body)["tasks"]]
    return wait_for(poll, "a tasks message on the endpoint queue")


def _outbox_empty(db) -> bool:  # type: ignore[no-untyped-def]
    return not tasks.read_outbox(db, 10)


def test_handed_off_task_is_published_and_advanced(setup):
    store, publisher, ch = setup
    task_id = store.submit(publisher.handoff)
    assert _next_task_ids(ch, store.endpoint_id) == [task_id]
    wait_for(lambda: _outbox_empty(store.db), "the outbox row to be deleted")
    assert tasks.task_record(store.db, store.user, task_id)["status"] == "waiting-for-endpoint"


def test_a_lost_hand_off_still_goes_out_with_the_outbox(setup):
    store, publisher, ch = setup
    task_id = store.submit(handoff=None)  # as if the hand-off never arrived
    publisher.wake()
    assert _next_task_ids(ch, store.endpoint_id) == [task_id]


def test_a_late_hand_off_of_published_rows_sends_nothing(setup):
    store, publisher, ch = setup
    ep = store.endpoint_id
    held: list[tasks.Handoff] = []
    first = store.submit(held.append)  # hand-off held back; the outbox round sends it
    publisher.wake()
    assert _next_task_ids(ch, ep) == [first]
    wait_for(lambda: _outbox_empty(store.db), "the outbox row to be deleted")
    # The next task is committed before the late hand-off is looked at: on SQLite its outbox
    # row takes the id of the deleted one, so the late hand-off finds a row under its id.
    second = store.submit(held.append)
    publisher.handoff(held[0])  # arrives late: its row is gone, so it must send nothing
    publisher.handoff(held[1])
    assert _next_task_ids(ch, ep) == [second]
    method, _, _ = ch.basic_get(protocol.endpoint_queue(ep), auto_ack=True)
    assert method is None, "the late hand-off published its task a second time"
