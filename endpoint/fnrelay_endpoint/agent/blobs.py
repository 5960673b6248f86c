"""Send results too large for a message to the broker's blob store (docs/reliability.md).

The agent hands over each result whose serialized value is over its `result_size_limit`. If
the broker offered blobs at registration (and the value fits the broker's and the endpoint's
blob limits), an uploader thread PUTs the bytes to the broker over HTTPS with the endpoint's
token and hands back the result with a blob reference in place of the value; otherwise, or
if the broker refuses the upload, the task fails with the usual size error. Uploads run on
their own threads, so neither the engine's threads nor the AMQP I/O thread wait for them. A
result is journaled only once its upload is done: if the endpoint stops meanwhile, the task
counts as interrupted and runs again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fnrelay.blobs import BlobRef, describe, reference
from fnrelay.errors import BrokerError
from fnrelay.wire import ResultMessage, TaskState
from fnrelay_endpoint.broker_api import BrokerAPI, Stopped, retry
from fnrelay_endpoint.worker import ResultTooLargeError, exception_info, too_large_error

log = logging.getLogger(__name__)

#: Upload threads: a few large results in flight at once, not one per task.
UPLOADERS = 2
#: HTTP statuses after which retrying the same upload cannot help.
_FINAL = {400, 401, 403, 404, 411, 413, 422}


class BlobUploader:
    """Uploads oversized results for one endpoint; `deliver` gets every outcome."""

    def __init__(self, broker_url: str, endpoint_id: str, token: str, blob_limit: int,
                 size_limit: int, deliver: Callable[[ResultMessage], None],
                 stop: threading.Event):
        self.api, self.endpoint_id = BrokerAPI(broker_url, token), endpoint_id
        self.blob_limit, self.size_limit = blob_limit, size_limit
        self.deliver, self.stop = deliver, stop
        self.broker_limit = 0  # the broker's blob limit; 0: it keeps no blobs
        self._offered = threading.Event()  # registered: broker_limit is known
        self._pool = ThreadPoolExecutor(UPLOADERS, thread_name_prefix="fnrelay-blob-upload")

    def offer(self, reg: dict[str, Any]) -> None:
        """Note what the broker said at registration (`result_blobs`: {"max_bytes": N})."""
        offer = reg.get("result_blobs")
        limit = offer.get("max_bytes") if isinstance(offer, dict) else None
        self.broker_limit = limit if isinstance(limit, int) and limit > 0 else 0
        self._offered.set()

    def wants(self, result: ResultMessage) -> bool:
        """True for a result too large for a message (text length never exceeds its bytes)."""
        return result.result is not None and len(result.result) > self.size_limit

    def submit(self, result: ResultMessage) -> None:
        self._pool.submit(self._run, result)

    def shutdown(self) -> None:
        """Stop taking uploads; one under way finishes or is abandoned (its task re-runs)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    # --- one upload (an uploader thread) ----------------------------------------------------
    def _run(self, result: ResultMessage) -> None:
        try:
            out = self._send(result)
        except Exception as e:  # noqa: BLE001 - never lose the result's task silently
            log.exception("task %s: uploading its result blob failed", result.task_id)
            out = _failed(result, f"uploading the result blob failed: {e}")
        if out is not None:
            self.deliver(out)

    def _send(self, result: ResultMessage) -> ResultMessage | None:
        """The result to journal: the reference, or a failure; None if stopped meanwhile."""
        data = (result.result or "").encode()
        size = len(data)
        if size <= self.size_limit:
            return result
        while not self._offered.wait(1.0):  # results of recovered tasks may come first
            if self.stop.is_set():
                return None
        limit = min(self.blob_limit, self.broker_limit)
        if size > limit:
            return self._too_large(result, size)
        ref = describe(data)

        def note(error: BrokerError, delay: float) -> None:
            log.warning("task %s: %s; retrying the blob upload in %.1f s", result.task_id,
                        error, delay)

        try:
            retry(lambda: self.api.upload_blob(self.endpoint_id, result.task_id, data,
                                               ref.sha256),
                  self.stop, on_retry=note, retryable=lambda e: e.http_status not in _FINAL)
        except Stopped:
            return None
        except BrokerError as e:
            log.error("task %s: the broker refused its result blob: %s", result.task_id, e)
            return _failed(result, f"the broker did not take the result blob of {size} "
                                   f"bytes: {e}", size)
        log.info("task %s: result of %d bytes uploaded as a blob", result.task_id, size)
        return _with_reference(result, ref)

    def _too_large(self, result: ResultMessage, size: int) -> ResultMessage:
        if not self.broker_limit:
            hint = "the broker keeps no result blobs (start it with --blob-store)"
        else:
            hint = (f"larger than the blob limit ({min(self.blob_limit, self.broker_limit)} "
                    "bytes)")
        exc = too_large_error(size, self.size_limit)
        return _failed(result, f"{exc}; {hint}", size)


def _with_reference(result: ResultMessage, ref: BlobRef) -> ResultMessage:
    return ResultMessage(task_id=result.task_id, status=result.status,
                         result=reference(ref.size, ref.sha256),
                         details={**(result.details or {}), "result_size": ref.size},
                         task_group_id=result.task_group_id)


def _failed(result: ResultMessage, message: str, size: int | None = None) -> ResultMessage:
    exc = ResultTooLargeError(message)
    details = {**(result.details or {})}
    if size is not None:
        details["result_size"] = size
    return ResultMessage(task_id=result.task_id, status=TaskState.FAILED.value,
                         exception=exception_info(exc), details=details,
                         task_group_id=result.task_group_id)

