"""One RabbitMQ virtual host per deployment.

The broker's queues and exchanges have fixed names (its results queue, the tasks exchange), so
two brokers of different databases on one vhost would consume each other's results and route
each other's tasks, and each would drop what it does not know. Replicas of one deployment
(one database) share the vhost on purpose.

While it runs, a broker holds a claim on its vhost: the exchange CLAIM_EXCHANGE, declared with
its deployment's name (`QueueNames.deployment`) as the ``alternate-exchange`` argument, and
bound to an exclusive queue of the broker's own connection. RabbitMQ refuses, atomically, to
declare an existing exchange with another value of that argument (PRECONDITION_FAILED), so a
broker of another database is refused while every replica of the same one declares the same
exchange again. The exchange is auto-delete: when the last broker holding it stops (or dies,
and its connection with it), its queue and binding go, and the exchange with them, so a new
deployment may then take the vhost. Nothing is published to the claim exchange, and its
alternate exchange is never declared.
"""

from __future__ import annotations

import logging
from urllib.parse import unquote, urlsplit

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingConnection

from fnrelay_broker.amqp import parameters
from fnrelay_broker.queues import QueueNames

log = logging.getLogger(__name__)

CLAIM_EXCHANGE = "fnrelay.deployment"
ARGUMENT = "alternate-exchange"


class VhostTaken(Exception):
    """Another deployment's broker uses this RabbitMQ virtual host."""


class VhostClaim:
    """This broker's claim on its vhost, held by a connection of its own until `release`."""

    def __init__(self, amqp_url: str, names: QueueNames):
        self.amqp_url, self.names = amqp_url, names
        self._conn: BlockingConnection | None = None

    def acquire(self) -> bool:
        """True when held; False when RabbitMQ cannot be reached now (then it is not checked);
        VhostTaken when a broker of another deployment holds the vhost."""
        params = parameters(self.amqp_url)
        params.heartbeat = 0  # the connection idles for the broker's life; TCP tells its end
        try:
            conn = pika.BlockingConnection(params)
        except pika.exceptions.AMQPError as e:
            log.warning("RabbitMQ unreachable: cannot check that vhost %s is this deployment's "
                        "alone (%s)", vhost_of(self.amqp_url), e or type(e).__name__)
            return False
        try:
            channel = conn.channel()
            channel.exchange_declare(CLAIM_EXCHANGE, "fanout", auto_delete=True,
                                     arguments={ARGUMENT: self.names.deployment()})
            queue = channel.queue_declare("", exclusive=True).method.queue
            channel.queue_bind(queue, CLAIM_EXCHANGE)
        except pika.exceptions.ChannelClosedByBroker as e:
            conn.close()
            if e.reply_code != 406:
                raise
            raise VhostTaken(taken_message(self.amqp_url)) from None
        self._conn = conn
        return True

    def release(self) -> None:
        if self._conn is not None and self._conn.is_open:
            try:
                self._conn.close()
            except pika.exceptions.AMQPError:
                pass  # gone already: so is the claim
        self._conn = None


def taken_message(amqp_url: str) -> str:
    return (f"RabbitMQ vhost {vhost_of(amqp_url)!r} is in use by a running broker of another "
            "deployment (another database): brokers of different databases on one vhost take "
            "each other's messages. Give each deployment its own vhost (docs/deployment.md), "
            "or point this broker at that deployment's database to run it as a replica")


def vhost_of(amqp_url: str) -> str:
    path = urlsplit(amqp_url).path
    return unquote(path[1:]) if len(path) > 1 else "/"
