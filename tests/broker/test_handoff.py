"""The submit hand-off: a fast path that never publishes a task twice and never loses one.

A real OutboxPublisher thread on a fresh RabbitMQ virtual host and a real SQLite database: the
request hands its committed messages to the publisher; the outbox rows stay the guarantee.
"""

from __future__ import annotations

import pika
import pytest

from fnrelay import wire
from fnrelay_broker import queues, tasks
from fnrelay_broker.amqp import declare_endpoint_queue, declare_exchanges
from fnrelay_broker.routing import OutboxPublisher
from support.waiting import wait_for


@pytest.fixture
def setup(task_store, new_vhost):  # type: ignore[no-untyped-def]
    """The task store, its OutboxPublisher thread, and a channel to read the endpoint's queue."""
    url = new_vhost("fnrelay-handoff")
    names = queues.load(task_store.db)
    publisher = OutboxPublisher(task_store.db, url, names)
    publisher.start()
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    declare_exchanges(ch)
    # as endpoint registration does
    queue = declare_endpoint_queue(ch, names, task_store.endpoint_id)
    yield task_store, publisher, _Reader(ch, queue)
    conn.close()
    publisher.stop()


class _Reader:
    """A channel and the one endpoint queue the tests read."""

    def __init__(self, channel, queue: str):  # type: ignore[no-untyped-def]
        self.channel, self.queue = channel, queue

    def get(self):  # type: ignore[no-untyped-def]
        return self.channel.basic_get(self.queue, auto_ack=True)


def _next_task_ids(ch: _Reader) -> list[str]:
    def poll():  # type: ignore[no-untyped-def]
        method, _, body = ch.get()
        return None if method is None else [t["task_id"] for t in wire.decode(body)["tasks"]]
    return wait_for(poll, "a tasks message on the endpoint queue")


def _outbox_empty(db) -> bool:  # type: ignore[no-untyped-def]
    return not tasks.read_outbox(db, 10)


def test_handed_off_task_is_published_and_advanced(setup):
    store, publisher, ch = setup
    task_id = store.submit(publisher.handoff)
    assert _next_task_ids(ch) == [task_id]
    wait_for(lambda: _outbox_empty(store.db), "the outbox row to be deleted")
    assert tasks.task_record(store.db, store.user, task_id)["status"] == "waiting-for-endpoint"


def test_a_lost_hand_off_still_goes_out_with_the_outbox(setup):
    store, publisher, ch = setup
    task_id = store.submit(handoff=None)  # as if the hand-off never arrived
    publisher.wake()
    assert _next_task_ids(ch) == [task_id]


def test_a_late_hand_off_of_published_rows_sends_nothing(setup):
    store, publisher, ch = setup
    held: list[tasks.Handoff] = []
    first = store.submit(held.append)  # hand-off held back; the outbox round sends it
    publisher.wake()
    assert _next_task_ids(ch) == [first]
    wait_for(lambda: _outbox_empty(store.db), "the outbox row to be deleted")
    # The next task is committed before the late hand-off is looked at: on SQLite its outbox
    # row takes the id of the deleted one, so the late hand-off finds a row under its id.
    second = store.submit(held.append)
    publisher.handoff(held[0])  # arrives late: its row is gone, so it must send nothing
    publisher.handoff(held[1])
    assert _next_task_ids(ch) == [second]
    method, _, _ = ch.get()
    assert method is None, "the late hand-off published its task a second time"
