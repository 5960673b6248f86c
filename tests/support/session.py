"""Facts of one test session that fixtures and tests share."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fnrelay.devstack.rabbitmq import RabbitMQServer

#: Every process the fixtures start carries this marker, so teardown can prove none is left.
MARKER = f"pytest-{uuid.uuid4().hex}"


def discard_node(node: RabbitMQServer) -> None:
    """Stop a RabbitMQ node whose data the session throws away next: SIGKILL, as its orderly
    shutdown (`rabbitmqctl stop`, about 9 s each) would keep nothing anyone reads."""
    from fnrelay.processes import pid_alive

    if pid_alive(node.pid):  # its VM, even with the app stopped
        node.kill()
    node.stop()  # reaps the process it started, if any
