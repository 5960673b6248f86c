"""Direct-path messages in flight together: a bounded window of `tasks` messages whose
publisher confirms are awaited side by side.

pika's BlockingChannel waits for each publisher confirm, so one publisher sends one message
per round trip to RabbitMQ: across a WAN (50 ms there and back) a burst of 10,000 tasks in
128-task messages waited 78 round trips one after the other (docs/performance.md, round 12).
Here up to WINDOW lanes, each a thread with a publisher (an AMQP connection) of its own, each
wait for their own message's confirm, so up to WINDOW messages are unconfirmed at once and the
submitter goes on preparing the next. Lanes start only when a burst needs them: a lone call is
published by the submitter itself, as before, with no thread switch on its way.

Nothing counts as sent before RabbitMQ confirmed it: a lane calls `on_confirmed` (the futures'
`_submitted`, the broker's records of the tasks) only then, and a message whose publish failed
comes back through `failed` with its futures, for the submitter to send over REST. Until then
its futures stay in the pending table (the Executor's record of what is unconfirmed); lanes
never drop a message.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from fnrelay import wire
from fnrelay.direct import DirectUnavailable
from fnrelay.executor.pending import Chunk
from fnrelay.executor.transport import TaskPublisher
from fnrelay.library_logs import reports_its_own_errors

log = logging.getLogger(__name__)

#: Messages (each up to `batch_size` tasks) unconfirmed at once: 4 x 128 tasks per round trip
#: keeps a 50 ms round trip above 10,000 tasks/s, while an Executor opens at most 4 more
#: connections.
WINDOW = 4
IDLE_SERVICE = 5.0  # an idle lane answers its connection's heartbeats this often


@dataclass
class Job:
    """One `tasks` message and the futures it carries."""

    chunk: Chunk
    msgs: list[wire.TaskMessage]
    body: bytes
    amqp_url: str


class Lanes:
    """Up to `width` publisher threads taking jobs from one queue; `put` waits while `width`
    jobs are unconfirmed (the window), which also bounds the memory a burst holds."""

    def __init__(self, publishers: Callable[[], TaskPublisher],
                 on_confirmed: Callable[[Job], None], width: int = WINDOW):
        self._publishers, self._on_confirmed, self._width = publishers, on_confirmed, width
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        #: Jobs whose publish failed, with why: the submitter sends them over REST.
        self.failed: queue.SimpleQueue[tuple[Job, DirectUnavailable]] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._cond = threading.Condition()
        self._inflight = 0  # jobs put and not yet confirmed or failed

    def busy(self) -> bool:
        """Are messages unconfirmed?"""
        with self._cond:
            return self._inflight > 0

    def put(self, job: Job) -> None:
        """Hand a job to a lane, waiting while the window is full."""
        with self._cond:
            while self._inflight >= self._width:
                self._cond.wait()
            self._inflight += 1
            lane = None
            if len(self._threads) < self._inflight:  # each lane holds one job at a time
                lane = threading.Thread(target=self._run, name="fnrelay-publish-lane",
                                        daemon=True)
                self._threads.append(lane)
        if lane is not None:
            lane.start()
        self._jobs.put(job)

    def wait_idle(self) -> None:
        """Wait until every job handed over is confirmed or failed."""
        with self._cond:
            while self._inflight:
                self._cond.wait()

    def close(self) -> None:
        """Let the lanes finish what they hold, then stop them (each closes its connection)."""
        for _ in self._threads:
            self._jobs.put(None)
        for lane in self._threads:
            lane.join()
        self._threads.clear()

    def _run(self) -> None:
        reports_its_own_errors()  # a lost connection comes back as a failed job, said once
        publisher = self._publishers()
        try:
            while True:
                try:
                    job = self._jobs.get(timeout=IDLE_SERVICE)
                except queue.Empty:
                    publisher.service()
                    continue
                if job is None:
                    return
                self._publish(publisher, job)
        finally:
            publisher.close()

    def _publish(self, publisher: TaskPublisher, job: Job) -> None:
        try:
            publisher.publish(job.amqp_url, job.body)
        except DirectUnavailable as e:
            self.failed.put((job, e))
        except Exception as e:  # noqa: BLE001 - never lose a job: REST takes it
            log.warning("direct publish failed unexpectedly: %r", e)
            self.failed.put((job, DirectUnavailable(repr(e), sent=True)))
        else:
            self._on_confirmed(job)
        finally:
            with self._cond:
                self._inflight -= 1
                self._cond.notify_all()
