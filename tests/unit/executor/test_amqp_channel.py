"""The real result channel's promise the watcher relies on: letting go never raises."""

from __future__ import annotations

from fnrelay.executor.transport import _AmqpChannel


class _Broken:
    """What pika's objects do after RabbitMQ closed the connection (seen in a restart)."""

    def basic_ack(self, tag: int, multiple: bool = False) -> None:
        raise AssertionError("ctag1.gone")

    def cancel(self) -> None:
        raise AssertionError("ctag1.gone")

    def close(self) -> None:
        raise RuntimeError("connection already closed")


def test_closing_a_channel_whose_connection_rabbitmq_closed_does_not_raise() -> None:
    channel = _AmqpChannel(_Broken(), _Broken(), "queue")  # type: ignore[arg-type]
    channel.close(ack=7)
    channel.close()  # idempotent
