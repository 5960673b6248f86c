"""What the Executor's parts need from outside it, as narrow interfaces.

* `BrokerApi`: the REST calls they make (`fnrelay.client.Client` is the real one);
* `ResultStream`: the task group's result queue (`AmqpResultStream`, over pika, is the real
  one); it raises only the `StreamError`s below, so the watcher's outage handling does not
  depend on pika's exception classes;
* `TaskPublisher`: the direct path's confirmed publisher (`fnrelay.direct.DirectPublisher`).

The unit tests hand the parts in-memory fakes of each (tests/support/fake_transport.py), as
Dramatiq's StubBroker stands in for RabbitMQ.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import pika
import pika.exceptions

from fnrelay.amqp import parameter_list
from fnrelay.direct import DirectPublisher


class BrokerApi(Protocol):
    """The broker's REST calls an Executor makes (see fnrelay.client.Client for each)."""

    broker_url: str

    def function_body(self, function_id: str) -> str | None: ...

    def create_task_group(self, task_group_id: str | None = None,
                          endpoint_id: str | None = None) -> dict[str, Any]: ...

    def get_task_group(self, task_group_id: str) -> dict[str, Any]: ...

    def submit(self, endpoint_id: Any, tasks: list[dict[str, Any]],
               task_group_id: str | None = None, request_id: str | None = None,
               check_versions: bool = True) -> dict[str, Any]: ...

    def task_record(self, task_id: str) -> dict[str, Any]: ...

    def get_tasks(self, task_ids: list[str]) -> dict[str, Any]: ...

    def cancel(self, task_id: str) -> str: ...

    def get_result_blob(self, task_id: str) -> bytes: ...

    def get_endpoint_status(self, endpoint_id: str) -> dict[str, Any]: ...


class StreamError(Exception):
    """The result stream is unavailable; the text says why (never empty)."""


class StreamLost(StreamError):
    """RabbitMQ cannot be reached, or closed the connection or channel."""


class QueueGone(StreamError):
    """The group's queue does not exist (it expired while nobody read it)."""


class ReaderRefused(StreamError):
    """RabbitMQ refused the group's reader account (its password was reset)."""


@dataclass(slots=True)
class Delivery:
    """One message from the group's queue; `user_id` is the sender as RabbitMQ validated it."""

    tag: int
    user_id: str | None
    type: str | None
    body: bytes


class ResultChannel(Protocol):
    """One consumer on a group's queue, on one connection."""

    def deliveries(self, inactivity: float) -> Iterator[Delivery | None]:
        """Messages as they come; None after each `inactivity` seconds without one."""
        ...

    def ack(self, tag: int) -> None:
        """Acknowledge the delivery `tag` and every earlier one."""
        ...

    def wake(self) -> None:
        """From any thread: end `deliveries` now rather than after its wait; never raises."""
        ...

    def close(self, ack: int = 0) -> None:
        """Acknowledge through `ack` (if not 0), then let go; never raises. Idempotent."""
        ...


class ResultStream(Protocol):
    def open(self, amqp_url: str, queue: str, prefetch: int) -> ResultChannel:
        """Connect and consume `queue`, at most `prefetch` messages unacknowledged."""
        ...


class TaskPublisher(Protocol):
    """The direct path: publishes `tasks` messages to the endpoint and waits for confirms."""

    def connect(self, amqp_url: str) -> None: ...

    def publish(self, amqp_url: str, body: bytes, records: bool = False) -> None: ...

    def service(self) -> None: ...

    def close(self) -> None: ...


#: Makes the direct path's publisher for the grant's exchange and routing key.
PublisherFactory = Callable[[str, str], TaskPublisher]


@dataclass(frozen=True)
class Transport:
    """The AMQP side of an Executor: its result stream and its direct-path publishers."""

    results: ResultStream
    publishers: PublisherFactory


def _stream_error(e: BaseException) -> StreamError:
    text = str(e) or type(e).__name__
    if isinstance(e, pika.exceptions.ChannelClosedByBroker) and e.reply_code == 404:
        return QueueGone(text)
    if isinstance(e, (pika.exceptions.ProbableAuthenticationError,
                      pika.exceptions.ProbableAccessDeniedError)):
        return ReaderRefused(text)
    return StreamLost(text)


class _AmqpChannel:
    def __init__(self, connection: pika.BlockingConnection, channel: Any, queue: str):
        self._connection, self._channel, self._queue = connection, channel, queue
        self._open = True

    def deliveries(self, inactivity: float) -> Iterator[Delivery | None]:
        try:
            for method, props, body in self._channel.consume(self._queue,
                                                             inactivity_timeout=inactivity):
                yield None if method is None else Delivery(
                    method.delivery_tag, props.user_id, props.type, body)
        except (pika.exceptions.AMQPError, OSError) as e:
            raise _stream_error(e) from e

    def ack(self, tag: int) -> None:
        try:
            self._channel.basic_ack(tag, multiple=True)
        except (pika.exceptions.AMQPError, OSError) as e:
            raise _stream_error(e) from e

    def wake(self) -> None:
        # pika's consume generator ends once its consumer is cancelled, and a cancel is the
        # one way in from another thread: a callback the connection's thread runs.
        try:
            self._connection.add_callback_threadsafe(self._cancel)
        except Exception:  # noqa: BLE001 - a closed connection has no wait to end
            pass

    def _cancel(self) -> None:
        try:
            self._channel.cancel()
        except Exception:  # noqa: BLE001 - the channel is gone: nothing waits on it
            pass

    def close(self, ack: int = 0) -> None:
        if not self._open:
            return
        self._open = False
        # Letting go of a connection RabbitMQ already closed must not kill the watcher: pika
        # then fails in its own bookkeeping too (an AssertionError from basic_cancel).
        try:
            if ack:
                self._channel.basic_ack(ack, multiple=True)
            self._channel.cancel()
        except Exception:  # noqa: BLE001 - the channel is gone either way
            pass
        try:
            self._connection.close()
        except Exception:  # noqa: BLE001 - the connection is gone either way
            pass


class AmqpResultStream:
    """The real result stream: one pika connection per `open`, as the group's reader."""

    def open(self, amqp_url: str, queue: str, prefetch: int) -> ResultChannel:
        try:
            params = parameter_list(amqp_url, socket_timeout=5, connection_attempts=1)
            connection = pika.BlockingConnection(params)
        except (pika.exceptions.AMQPError, OSError) as e:
            raise _stream_error(e) from e
        try:
            channel = connection.channel()
            channel.basic_qos(prefetch_count=prefetch)
        except (pika.exceptions.AMQPError, OSError) as e:
            try:
                connection.close()
            except (pika.exceptions.AMQPError, OSError):
                pass
            raise _stream_error(e) from e
        return _AmqpChannel(connection, channel, queue)


#: What an Executor uses unless handed another transport.
AMQP = Transport(results=AmqpResultStream(), publishers=DirectPublisher)
