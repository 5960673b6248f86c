"""A concurrent.futures.Executor that runs calls on an fnrelay endpoint.

One module per part: `api` (the Executor, wiring the parts), `future`, `pending` (the
pending-task table and its settling rules), `submitter`, `watcher` (results over AMQP, REST
polling as the fallback), `group` (the task group at the broker), `registry` (function ids by
callable), `options` (Globus Compute keywords without effect here) and `transport` (what the
parts need from outside, so they can be tested against in-memory fakes).
"""

from fnrelay.executor.api import Executor
from fnrelay.executor.future import FnRelayFuture
from fnrelay.executor.options import UnusedOption
from fnrelay.executor.submitter import MAX_BATCH_BYTES
from fnrelay.executor.submitter import split as _chunks

__all__ = ["MAX_BATCH_BYTES", "Executor", "FnRelayFuture", "UnusedOption", "_chunks"]
