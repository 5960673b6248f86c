"""Remote failures come back as their own exception type, with the remote traceback."""

from __future__ import annotations

import traceback
import warnings

import pytest

from fnrelay import results, serialize
from fnrelay.errors import TaskCancelled, TaskExecutionFailed
from fnrelay.wire import ExceptionInfo

REMOTE_TB = 'Traceback (most recent call last):\n  File "job.py", line 3, in f\nKeyError: \'x\'\n'


class CustomError(Exception):
    def __init__(self, code, text):
        super().__init__(code, text)
        self.code = code


def info_for(exc: BaseException) -> ExceptionInfo:
    return ExceptionInfo(type=f"{type(exc).__module__}.{type(exc).__qualname__}",
                         message=str(exc), traceback=REMOTE_TB,
                         serialized=serialize.serialize(exc))


def test_builtin_exception_is_recreated_with_remote_traceback():
    exc = results.recreate_exception(info_for(KeyError("x")), task_id="t1")
    assert type(exc) is KeyError and exc.args == ("x",)
    assert exc.remote_traceback == REMOTE_TB
    shown = "".join(traceback.format_exception(exc))
    assert 'File "job.py", line 3' in shown and "t1" in shown


def test_user_defined_exception_keeps_its_type_and_attributes():
    exc = results.recreate_exception(info_for(CustomError(7, "bad")))
    assert isinstance(exc, CustomError) and exc.code == 7


def test_unrecreatable_exception_becomes_task_execution_failed():
    info = ExceptionInfo(type="somelib.WeirdError", message="boom", traceback=REMOTE_TB,
                         serialized="02\nnot-base64!")
    exc = results.recreate_exception(info, task_id="t2")
    assert isinstance(exc, TaskExecutionFailed)
    assert "somelib.WeirdError: boom" in str(exc) and REMOTE_TB.strip() in str(exc)
    assert exc.task_id == "t2"


def test_outcome_of_each_terminal_state():
    assert results.outcome("t", "success", serialize.serialize({"a": 1}), None, {}) == (
        True, {"a": 1})
    ok, exc = results.outcome("t", "cancelled", None, None, {})
    assert not ok and isinstance(exc, TaskCancelled)
    ok, exc = results.outcome("t", "failed", None, info_for(ValueError("v")), {})
    assert not ok and isinstance(exc, ValueError)


def test_version_mismatch_warns_once(monkeypatch):
    monkeypatch.setattr(results, "_warned", False)
    with pytest.warns(RuntimeWarning, match="Python 2.7"):
        results.check_versions({"python_version": "2.7.18", "dill_version": "0.0.1"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        results.check_versions({"python_version": "2.7.18"})


def test_matching_versions_do_not_warn(monkeypatch):
    monkeypatch.setattr(results, "_warned", False)
    local = serialize.versions()
    same_minor = local["python_version"].rsplit(".", 1)[0] + ".99"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        results.check_versions(
            {"python_version": same_minor, "dill_version": local["dill_version"]}
        )
