"""The future of one task, as the Executor hands it out."""

from __future__ import annotations

import concurrent.futures as cf
import threading
from typing import Any, Protocol

from fnrelay import blobs, errors, serialize


class FutureOwner(Protocol):
    """What a future needs from its Executor: cancelling goes through it (the broker may have
    the task), and a large result is fetched from the broker on first read."""

    def _cancel(self, future: FnRelayFuture) -> bool: ...

    def _result_blob(self, task_id: str) -> bytes: ...

    def _waiting_for(self, future: FnRelayFuture) -> str: ...


class Success:
    """A not-yet-deserialized result value (deserialized on first .result(); a result blob is
    fetched then too, so the watcher thread never waits for a download)."""

    __slots__ = ("data",)

    def __init__(self, data: str | None):
        self.data = data


class FnRelayFuture(cf.Future):
    """A Future for one task. ``task_id`` is set once the broker has accepted the task."""

    def __init__(self, executor: FutureOwner):
        super().__init__()
        self.task_id: str | None = None
        self._endpoint_id: str | None = None  # where it is sent (set at submit)
        self._executor = executor
        self._claimed = False  # taken by the submitter: can no longer be cancelled locally
        self._submitted = threading.Event()  # set when the submit request has finished
        self._value_lock = threading.Lock()
        #: Published straight to the endpoint: the one task whose result may come from the
        #: endpoint's account rather than the broker's.
        self._direct = False

    def cancel(self) -> bool:
        """True only if the task has not started (and now never will)."""
        return self._executor._cancel(self)

    def result(self, timeout: float | None = None) -> Any:
        try:
            value = super().result(timeout)
        except cf.TimeoutError as e:
            if self.done():  # the task's own TimeoutError (a walltime, say), not the wait's
                raise
            raise self._timed_out(timeout) from e
        if isinstance(value, Success):
            with self._value_lock:  # deserialize once, even with concurrent readers
                if isinstance(self._result, Success):
                    data = blobs.resolve(self.task_id or "", value.data,
                                         self._executor._result_blob)
                    self._result = serialize.deserialize(data) if data is not None else None
                value = self._result
        return value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        try:
            return super().exception(timeout)
        except cf.TimeoutError as e:
            if self.done():  # the task's own TimeoutError (a walltime, say), not the wait's
                raise
            raise self._timed_out(timeout) from e

    def _timed_out(self, timeout: float | None) -> cf.TimeoutError:
        """The error of a wait that ran out: which task, and what its endpoint is doing (the
        usual reason is an endpoint that is not running)."""
        task = f"task {self.task_id}" if self.task_id else "the task (not sent yet)"
        return cf.TimeoutError(f"{task} not done after {timeout:g} s; "
                               f"{self._executor._waiting_for(self)}")

    def _resolve(self, ok: bool, value: Any) -> None:
        """Finish the future unless it already is (e.g. cancelled meanwhile)."""
        try:
            if isinstance(value, errors.TaskCancelled):
                cf.Future.cancel(self)
            elif ok:
                self.set_result(value)
            else:
                self.set_exception(value)
        except cf.InvalidStateError:
            pass
