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

The claim lives as long as its connection: a RabbitMQ restart ends it, and a broker started
while RabbitMQ was down never held it. `ClaimKeeper` takes it again whenever it is not held;
if another deployment took the vhost meanwhile, the broker stops (as it would have refused to
start) rather than trade messages with it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingConnection

from fnrelay.amqp import first_url
from fnrelay_broker.amqp import parameters
from fnrelay_broker.queues import QueueNames

log = logging.getLogger(__name__)

CLAIM_EXCHANGE = "fnrelay.deployment"
ARGUMENT = "alternate-exchange"
#: The claim connection's name in RabbitMQ's management UI.
CONNECTION_NAME = "fnrelay-broker-vhost-claim"
#: Seconds between the keeper's checks that the claim is still held.
CHECK_PERIOD = 5.0


class VhostTaken(Exception):
    """Another deployment's broker uses this RabbitMQ virtual host."""


class VhostClaim:
    """This broker's claim on its vhost, held by a connection of its own until `release`."""

    def __init__(self, amqp_url: str, names: QueueNames):
        self.amqp_url, self.names = amqp_url, names
        self._conn: BlockingConnection | None = None

    def acquire(self, warn: bool = True) -> bool:
        """True when held; False when RabbitMQ cannot be reached now (then it is not checked);
        VhostTaken when a broker of another deployment holds the vhost."""
        params = parameters(self.amqp_url)
        for one in params:
            one.heartbeat = 0  # the connection idles for the broker's life; TCP tells its end
            one.client_properties = {"connection_name": CONNECTION_NAME}
        try:
            conn = pika.BlockingConnection(params)
        except pika.exceptions.AMQPError as e:
            if warn:
                log.warning("RabbitMQ unreachable: cannot check that vhost %s is this "
                            "deployment's alone (%s); checking again while the broker runs",
                            vhost_of(self.amqp_url), e or type(e).__name__)
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

    def held(self) -> bool:
        """Whether the claim's connection is still open (reading what RabbitMQ sent it: a
        close, or the end of the stream). Only one thread may call it, as with acquire."""
        if self._conn is None:
            return False
        try:
            self._conn.process_data_events(time_limit=0)
        except pika.exceptions.AMQPError:
            pass
        if self._conn.is_open:
            return True
        self._conn = None
        return False

    def release(self) -> None:
        if self._conn is not None and self._conn.is_open:
            try:
                self._conn.close()
            except pika.exceptions.AMQPError:
                pass  # gone already: so is the claim
        self._conn = None


class ClaimKeeper(threading.Thread):
    """Holds the claim while the broker runs: takes it again when it was lost (RabbitMQ
    restarted, or was unreachable at start). When another deployment took the vhost in the
    gap, it logs why and calls `on_taken` (the broker stops) and ends."""

    def __init__(self, claim: VhostClaim, on_taken: Callable[[str], None],
                 period: float = CHECK_PERIOD):
        super().__init__(name="fnrelay-vhost-claim", daemon=True)
        self.claim, self.on_taken, self.period = claim, on_taken, period
        self._stop_event = threading.Event()

    def run(self) -> None:
        lost = False
        while not self._stop_event.wait(self.period):
            if self.claim.held():
                continue
            if not lost:
                log.warning("no claim on RabbitMQ vhost %s (RabbitMQ restarted or "
                            "unreachable); taking it again", vhost_of(self.claim.amqp_url))
                lost = True
            try:
                if self.claim.acquire(warn=False):
                    log.info("claim on RabbitMQ vhost %s held again",
                             vhost_of(self.claim.amqp_url))
                    lost = False
            except VhostTaken as e:
                log.error("%s; stopping this broker", e)
                self.on_taken(str(e))
                return
            except pika.exceptions.AMQPError as e:  # RabbitMQ went away mid-declare
                log.debug("claim not taken yet: %s", e)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=self.period + 5)


def taken_message(amqp_url: str) -> str:
    return (f"RabbitMQ vhost {vhost_of(amqp_url)!r} is in use by a running broker of another "
            "deployment (another database): brokers of different databases on one vhost take "
            "each other's messages. Give each deployment its own vhost (docs/deployment.md), "
            "or point this broker at that deployment's database to run it as a replica")


def vhost_of(amqp_url: str) -> str:
    path = urlsplit(first_url(amqp_url)).path
    return unquote(path[1:]) if len(path) > 1 else "/"
