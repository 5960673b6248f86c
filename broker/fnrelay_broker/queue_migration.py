"""Move fnrelay's durable queues to another queue type (classic -> quorum for a cluster).

RabbitMQ cannot change a queue's type: declaring it again with another x-queue-type fails with
406. So each queue Q is rebuilt through a holding queue: Q's bindings move to the holding queue
(what is published meanwhile lands there), Q's messages follow one by one (each acked only
once RabbitMQ confirmed its copy), Q is deleted and declared again with the new type and its
other arguments, gets its bindings back, and the holding queue's messages move back into it.
A run that stopped half-way is finished by the next: a holding queue left over is drained back.

Nobody may consume meanwhile (a consumer would hold unacked messages the move cannot see): the
broker, the endpoints and Executors must be stopped; a queue with consumers is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel

from fnrelay_broker.accounts import Accounts
from fnrelay_broker.amqp import parameters
from fnrelay_broker.queues import queue_arguments

#: What the holding queue of Q is called.
HOLDING_SUFFIX = ".migrating"


class MigrationError(Exception):
    """What stops a migration, in one line for the operator."""


@dataclass
class Moved:
    queue: str
    messages: int


def candidates(queues: list[dict[str, Any]], to: str) -> list[dict[str, Any]]:
    """fnrelay's durable queues of another type than `to` (exclusive ones cannot change),
    and holding queues left over by an interrupted run."""
    return [q for q in queues
            if q["name"].startswith("fnrelay.") and q.get("durable")
            and not q.get("exclusive") and not q.get("auto_delete")
            and (q.get("type", "classic") != to or q["name"].endswith(HOLDING_SUFFIX))]


def migrate(amqp_url: str, accounts: Accounts, to: str,
            report: Callable[[str], None] = lambda _: None) -> list[Moved]:
    """Rebuild every candidate queue as a `to` queue; refuses if any has consumers."""
    every = {q["name"]: q for q in accounts.queues()}
    queues = candidates(list(every.values()), to)
    conn = pika.BlockingConnection(parameters(amqp_url))

    def channel() -> BlockingChannel:
        """A fresh confirming channel: RabbitMQ 3.10 crashes a channel that used a queue
        deleted and declared again with another type (it keeps the old type's state)."""
        ch = conn.channel()
        ch.confirm_delivery()
        return ch

    try:
        _refuse_consumed(channel(), queues)
        moved = []
        rebuilt = {q["name"] for q in queues}
        for q in queues:
            name = q["name"]
            if not name.endswith(HOLDING_SUFFIX):
                report(f"moving {name} ({q.get('messages', 0)} messages) to a {to} queue")
                moved.append(Moved(name, _rebuild(channel, accounts, q, to)))
            elif name[:-len(HOLDING_SUFFIX)] not in rebuilt:  # else handled with its queue
                base = name[:-len(HOLDING_SUFFIX)]
                report(f"finishing the interrupted move of {base}")
                moved.append(Moved(base, _finish(channel(), accounts, every.get(base), base,
                                                 to)))
        return moved
    finally:
        if conn.is_open:
            conn.close()


def _refuse_consumed(ch: BlockingChannel, queues: list[dict[str, Any]]) -> None:
    """Consumers as RabbitMQ counts them now (the management API's figures lag by seconds)."""
    busy = []
    for q in queues:
        consumers = ch.queue_declare(q["name"], passive=True).method.consumer_count
        if consumers:
            busy.append(f"{q['name']} ({consumers})")
    if busy:
        raise MigrationError("queues still have consumers: " + ", ".join(busy) + "; stop "
                             "the broker, every endpoint and every Executor first")


def _rebuild(channel: Callable[[], BlockingChannel], accounts: Accounts, q: dict[str, Any],
             to: str) -> int:
    name, holding = q["name"], q["name"] + HOLDING_SUFFIX
    args = {k: v for k, v in (q.get("arguments") or {}).items() if k != "x-queue-type"}
    bindings = accounts.bindings(name) or accounts.bindings(holding)
    # The holding queue lives no shorter than the move: no x-expires on it.
    ch = channel()
    ch.queue_declare(holding, durable=True, arguments=queue_arguments(to))
    _rebind(ch, bindings, name, holding)
    count = _move(ch, name, holding)
    _delete_empty(ch, name)
    ch.close()
    _restore(channel(), name, holding, queue_arguments(to, **args), bindings)
    return count


def _finish(ch: BlockingChannel, accounts: Accounts, base: dict[str, Any] | None,
            name: str, to: str) -> int:
    """Complete a run that stopped after deleting (or re-declaring) `name`."""
    holding = name + HOLDING_SUFFIX
    args = {k: v for k, v in ((base or {}).get("arguments") or {}).items()
            if k != "x-queue-type"}
    return _restore(ch, name, holding, queue_arguments(to, **args), accounts.bindings(holding))


def _restore(ch: BlockingChannel, name: str, holding: str, arguments: dict[str, Any] | None,
             bindings: list[dict[str, Any]]) -> int:
    """Declare `name` anew, give it the holding queue's bindings and then its messages."""
    ch.queue_declare(name, durable=True, arguments=arguments)
    _rebind(ch, bindings, holding, name)
    count = _move(ch, holding, name)
    _delete_empty(ch, holding)
    return count


def _rebind(ch: BlockingChannel, bindings: list[dict[str, Any]], source: str,
            target: str) -> None:
    """Give `target` each binding, then take it from `source`: bound to both for a moment,
    so a message published meanwhile lands in one of them, never in neither."""
    for b in bindings:
        args = b.get("arguments") or None
        ch.queue_bind(target, b["source"], routing_key=b["routing_key"], arguments=args)
        ch.queue_unbind(source, b["source"], routing_key=b["routing_key"], arguments=args)


def _delete_empty(ch: BlockingChannel, name: str) -> None:
    """Delete `name`, which the move emptied (quorum queues have no if-empty delete, so the
    count is checked first; bindings moved away, only a publisher by name could add one)."""
    left = ch.queue_declare(name, passive=True).method.message_count
    if left:
        raise MigrationError(f"{name} took {left} new message(s) during the move: something "
                             "still publishes to it; stop it and run the command again")
    ch.queue_delete(name)


def _move(ch: BlockingChannel, src: str, dst: str) -> int:
    """Move every message of `src` to `dst`; each is acked once `dst` confirmed its copy."""
    moved = 0
    while True:
        method, props, body = ch.basic_get(src)
        if method is None:
            return moved
        ch.basic_publish("", dst, body, props, mandatory=True)
        ch.basic_ack(method.delivery_tag)
        moved += 1
