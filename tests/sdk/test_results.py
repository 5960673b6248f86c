"""Remote failures come back as TaskExecutionFailed (what Globus Compute code catches) and as
their own type (what fnrelay code catches), with the remote traceback readable."""

from __future__ import annotations

import abc
import pickle
import traceback
import warnings

import dill
import pytest

from fnrelay import errors, results, serialize
from fnrelay.errors import TaskCancelled, TaskExecutionFailed
from fnrelay.wire import ExceptionInfo

REMOTE_TB = 'Traceback (most recent call last):\n  File "job.py", line 3, in f\nKeyError: \'x\'\n'


class CustomError(Exception):
    def __init__(self, code, text):
        super().__init__(code, text)
        self.code = code


class KeywordOnlyError(Exception):
    """An __init__ that cannot be called with its args: pickled by its own __reduce__."""

    def __init__(self, *, code):
        super().__init__(f"code {code}")
        self.code = code

    def __reduce__(self):
        return (_keyword_only, (self.code,))


def _keyword_only(code):
    return KeywordOnlyError(code=code)


class SlottedError(Exception):
    __slots__ = ("where",)

    def __init__(self, where):
        super().__init__(where)
        self.where = where


class WithMetaclassError(Exception, metaclass=abc.ABCMeta):
    pass


class FinalError(Exception):
    """A type that refuses subclasses, as a C extension's final type does."""

    def __init_subclass__(cls, **kwargs):
        raise TypeError("FinalError cannot be subclassed")


def info_for(exc: BaseException) -> ExceptionInfo:
    return ExceptionInfo(type=f"{type(exc).__module__}.{type(exc).__qualname__}",
                         message=str(exc), traceback=REMOTE_TB,
                         serialized=serialize.serialize(exc))


def test_builtin_exception_is_both_its_type_and_task_execution_failed():
    exc = results.recreate_exception(info_for(KeyError("x")), task_id="t1", completion_t=17.5)
    assert isinstance(exc, KeyError) and isinstance(exc, TaskExecutionFailed)
    assert type(exc).__name__ == "KeyError" and exc.args == ("x",)
    assert exc.remote_data == REMOTE_TB and exc.remote_traceback == REMOTE_TB
    assert exc.task_id == "t1" and exc.completion_t == "17.5"
    with pytest.raises(KeyError):
        raise exc
    with pytest.raises(TaskExecutionFailed):
        raise exc


def test_str_is_globus_computes_the_indented_remote_traceback():
    exc = results.recreate_exception(info_for(KeyError("x")), task_id="t1")
    assert str(exc) == "\n" + "\n".join(" " + line for line in REMOTE_TB.splitlines()) + "\n"
    shown = "".join(traceback.format_exception(exc))
    assert 'File "job.py", line 3' in shown and shown.count("KeyError") >= 2


def test_one_class_per_remote_type():
    a = results.recreate_exception(info_for(ValueError("a")))
    b = results.recreate_exception(info_for(ValueError("b")))
    assert type(a) is type(b)


@pytest.mark.parametrize("original, field, value", [
    (CustomError(7, "bad"), "code", 7),
    (KeywordOnlyError(code=9), "code", 9),
    (SlottedError("here"), "where", "here"),
    (OSError(2, "No such file", "/nope"), "filename", "/nope"),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "start", 0),
    (StopIteration(5), "value", 5),
    (WithMetaclassError("m"), "args", ("m",)),
])
def test_attributes_survive_and_the_object_pickles(original, field, value):
    exc = results.recreate_exception(info_for(original), task_id="t3", completion_t=1.0)
    assert isinstance(exc, type(original)) and isinstance(exc, TaskExecutionFailed)
    assert getattr(exc, field) == value and exc.args == original.args
    for dumps, loads in ((pickle.dumps, pickle.loads), (dill.dumps, dill.loads)):
        back = loads(dumps(exc))
        assert type(back) is type(exc)
        assert getattr(back, field) == value and back.args == exc.args
        assert (back.remote_data, back.completion_t, back.task_id) == (
            exc.remote_data, "1.0", "t3")
        assert back.remote_data.startswith(REMOTE_TB)


def test_a_type_that_refuses_subclasses_is_task_execution_failed_alone():
    exc = results.recreate_exception(info_for(FinalError("f")), task_id="t4")
    assert type(exc) is TaskExecutionFailed and exc.task_id == "t4"
    assert REMOTE_TB.strip().splitlines()[-1] in str(exc)


def test_a_remote_task_execution_failed_stays_itself():
    exc = results.recreate_exception(info_for(TaskExecutionFailed("inner")), task_id="t5")
    assert type(exc) is TaskExecutionFailed and exc.remote_data == "inner"
    assert exc.task_id == "t5"


def test_unrecreatable_exception_becomes_task_execution_failed():
    info = ExceptionInfo(type="somelib.WeirdError", message="boom", traceback="",
                         serialized="02\nnot-base64!")
    exc = results.recreate_exception(info, task_id="t2")
    assert type(exc) is TaskExecutionFailed
    assert "somelib.WeirdError: boom" in str(exc) and exc.task_id == "t2"
    assert pickle.loads(pickle.dumps(exc)).remote_data == "somelib.WeirdError: boom"


def test_system_exit_is_never_re_raised_as_itself():
    """A SystemExit re-raised by get_result would end the caller's program."""
    exc = results.recreate_exception(info_for(SystemExit(3)))
    assert type(exc) is TaskExecutionFailed


def test_remote_data_ends_with_the_message_the_traceback_lacks():
    info = ExceptionInfo(type="builtins.SystemExit", traceback=REMOTE_TB,
                         message="the task called sys.exit() (exit code 0)")
    exc = results.recreate_exception(info)
    assert exc.remote_data == (REMOTE_TB + "builtins.SystemExit: the task called sys.exit() "
                               "(exit code 0)\n")


def test_nothing_more_is_unpickled_than_the_serialized_exception():
    """The traceback and message are text: a pickle there is never loaded."""
    payload = serialize.serialize(ValueError("from the pickle"))
    info = ExceptionInfo(type="x.Y", message=payload, traceback=payload, serialized=None)
    exc = results.recreate_exception(info)
    assert type(exc) is TaskExecutionFailed and exc.remote_data == payload


def test_outcome_of_each_terminal_state():
    assert results.outcome("t", "success", serialize.serialize({"a": 1}), None, {}) == (
        True, {"a": 1})
    ok, exc = results.outcome("t", "cancelled", None, None, {})
    assert not ok and isinstance(exc, TaskCancelled)
    ok, exc = results.outcome("t", "failed", None, info_for(ValueError("v")),
                              {"completed": 12.0})
    assert not ok and isinstance(exc, ValueError) and isinstance(exc, TaskExecutionFailed)
    assert exc.completion_t == "12.0"


def test_globus_compute_error_classes_and_their_attributes():
    assert errors.ComputeError is errors.FnRelayError
    serde = errors.DeserializationError("bad bytes")
    assert isinstance(serde, errors.SerdeError) and serde.reason == "bad bytes"
    assert isinstance(serde, errors.SerializationError)  # fnrelay code catches this
    pending = errors.TaskPending("running", "t9")
    assert pending.reason == "running" and "t9" in str(pending)
    assert pickle.loads(pickle.dumps(pending)).reason == "running"
    assert errors.VersionMismatch("old").version_message == "old"
    big = errors.MaxResultSizeExceeded(11, 10)
    assert (big.result_size, big.result_size_limit) == (11, 10)
    assert str(big) == "Task result of 11B exceeded current limit of 10B"
    back = pickle.loads(pickle.dumps(errors.MaxResultSizeExceeded(11, 10, "use a file")))
    assert str(back) == "use a file" and back.result_size == 11
    failed = TaskExecutionFailed("tb text", "5.0")
    assert (failed.remote_data, failed.completion_t) == ("tb text", "5.0")
    assert TaskExecutionFailed("x").completion_t  # GC fills in the time when missing


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
