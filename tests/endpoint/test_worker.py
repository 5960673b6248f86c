"""worker.execute: what a task's caller gets back for values, exceptions and bad results."""

from __future__ import annotations

import os

from fnrelay import serialize
from fnrelay.wire import TaskMessage, new_id
from fnrelay_endpoint.worker import execute


def make_task(fn, *args, **kwargs) -> TaskMessage:  # type: ignore[no-untyped-def]
    return TaskMessage(task_id=new_id(), function_id=new_id(),
                       function=serialize.serialize_function(fn),
                       payload=serialize.serialize_args(args, kwargs), task_group_id="g")


def power(base, exp=2):  # type: ignore[no-untyped-def]
    return base**exp


def fails(x):  # type: ignore[no-untyped-def]
    raise KeyError(f"missing {x}")


class Local(Exception):
    pass


def fails_with_local_class():  # type: ignore[no-untyped-def]
    raise Local("custom")


def returns_a_generator():  # type: ignore[no-untyped-def]
    return (i for i in range(3))


def test_success_carries_the_value_and_details() -> None:
    r = execute(make_task(power, 3, exp=3))
    assert r.status == "success" and r.exception is None
    assert serialize.deserialize(r.result) == 27
    assert r.task_group_id == "g"
    assert r.details["pid"] == os.getpid()
    for key in ("python_version", "dill_version", "hostname", "started", "completed"):
        assert key in r.details


def test_exception_is_described_and_recreatable() -> None:
    r = execute(make_task(fails, "thing"))
    assert r.status == "failed" and r.result is None
    assert r.exception.type == "builtins.KeyError"
    assert "missing thing" in r.exception.message
    assert "in fails" in r.exception.traceback and "KeyError" in r.exception.traceback
    assert "fnrelay_endpoint" not in r.exception.traceback  # only the user's frames
    exc = serialize.deserialize(r.exception.serialized)
    assert isinstance(exc, KeyError)


def test_exception_type_is_module_qualified() -> None:
    r = execute(make_task(fails_with_local_class))
    assert r.exception.type.endswith(".Local") and r.exception.message == "custom"


def test_unserializable_result_is_a_clear_failure() -> None:
    r = execute(make_task(returns_a_generator))
    assert r.status == "failed"
    assert r.exception.type == "fnrelay.errors.SerializationError"
    assert "builtins.generator" in r.exception.message


def test_bad_payload_is_a_failure_not_a_crash() -> None:
    t = make_task(power, 2)
    t.payload = "99\ngarbage"
    r = execute(t)
    assert r.status == "failed" and r.exception.type == "fnrelay.errors.DeserializationError"


def exits(code):  # type: ignore[no-untyped-def]
    import sys

    sys.exit(code)


def test_a_system_exit_is_the_tasks_failure_not_an_escape() -> None:
    """execute() answers for whatever the task raised (a batch job writes it as its result)."""
    r = execute(make_task(exits, 4))
    assert (r.status, r.exception.type, r.details["exit_code"]) == (
        "failed", "builtins.SystemExit", 4)
    assert r.exception.serialized is None  # never re-raised in the caller's program
    assert "in exits" in r.exception.traceback


def _other_minor() -> str:
    import sys

    return f"3.{sys.version_info[1] - 1}"


def test_bytecode_of_another_python_fails_at_once_naming_both_versions() -> None:
    import sys

    from fnrelay.errors import PythonVersionMismatch

    namespace: dict = {}
    exec("def nosrc(x):\n    return x\n", namespace)  # noqa: S102 - no source: bytecode
    task = make_task(namespace["nosrc"], 1)
    assert task.function.startswith(serialize.TAG_DILL_CODE + "\n")
    task.python_version = _other_minor()
    r = execute(task)
    assert r.status == "failed" and r.exception.type.endswith("PythonVersionMismatch")
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert f"Python {_other_minor()} bytecode" in r.exception.message
    assert f"runs Python {here}" in r.exception.message
    exc = serialize.deserialize(r.exception.serialized)
    assert isinstance(exc, PythonVersionMismatch) and exc.submitted == _other_minor()
    task.python_version = here
    assert execute(task).status == "success"


def test_source_of_another_python_runs() -> None:
    task = make_task(power, 3)
    assert task.function.startswith(serialize.TAG_SOURCE_VALUES + "\n")
    task.python_version = _other_minor()
    r = execute(task)
    assert r.status == "success" and serialize.deserialize(r.result) == 9


def test_callable_objects_are_data_and_cross_versions() -> None:
    import functools

    task = make_task(functools.partial(power, 2), 5)  # holds a function of this test module
    assert task.function.startswith(serialize.TAG_DILL_DATA + "\n")
    task.python_version = _other_minor()
    r = execute(task)
    assert r.status == "success" and serialize.deserialize(r.result) == 32
