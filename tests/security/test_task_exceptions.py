"""A task's own BaseException on the local engine: SystemExit (argparse, click, sys.exit(0)),
KeyboardInterrupt, a BaseException of its own, an exception whose __str__ raises. Each is
the task's failure, reported with its type, exit code and traceback, on a worker that lives
on; none is "worker lost" (which the agent retries up to max_retries). A worker that dies
without raising (os._exit, a signal) stays a lost worker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from security.local_pool import Pool, make_task

from fnrelay import serialize
from fnrelay.errors import TaskExecutionFailed
from fnrelay.results import outcome


@pytest.fixture(scope="module")
def pool() -> Iterator[Pool]:
    p = Pool(1)
    yield p
    p.close()


def argparse_main() -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="analysis")
    parser.add_argument("--events", type=int, required=True)
    parser.parse_args(["--events", "many"])


def click_main() -> None:
    import click

    @click.command()
    @click.option("--name", default="world")
    def hello(name: str) -> None:
        click.echo(f"hello {name}")

    hello(["--name", "fnrelay"])  # standalone mode: sys.exit(0) when done


def exit_zero() -> None:
    import sys

    sys.exit(0)


def exit_with_message() -> None:
    import sys

    sys.exit("no input files")


def interrupted() -> None:
    raise KeyboardInterrupt


def own_base_exception() -> None:
    class Abort(BaseException):
        pass

    raise Abort("stop the analysis")


def unprintable_exception() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no text for you")

    raise Unprintable()


def unprintable_base_exception() -> None:
    class Unprintable(BaseException):
        def __str__(self) -> str:
            raise SystemExit(3)

    raise Unprintable()


def worker_pid() -> int:
    import os

    return os.getpid()


def hard_exit() -> None:
    import os

    os._exit(3)


def killed_by_signal() -> None:
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def assert_own_failure(pool: Pool, fn, type_name: str, in_traceback: str):  # type: ignore[no-untyped-def]
    """`fn` fails as the task's own doing, and the same worker runs the next task."""
    before = serialize.deserialize(pool.run(make_task(worker_pid)).result)
    r = pool.run(t := make_task(fn))
    assert (r.task_id, r.status) == (t.task_id, "failed")
    assert r.exception.type == type_name, r.exception
    assert in_traceback in r.exception.traceback, r.exception.traceback
    assert not r.details.get("infrastructure"), r.details  # never retried
    after = serialize.deserialize(pool.run(make_task(worker_pid)).result)
    assert after == before  # the worker survived it
    return r


@pytest.mark.parametrize(("fn", "code"), [(argparse_main, 2), (click_main, 0), (exit_zero, 0),
                                          (exit_with_message, 1)])
def test_system_exit_of_any_code_is_the_tasks_failure_with_its_exit_code(
        pool: Pool, fn, code: int) -> None:  # type: ignore[no-untyped-def]
    r = assert_own_failure(pool, fn, "builtins.SystemExit", f"in {fn.__name__}")
    assert r.details["exit_code"] == code
    assert f"exit code {code}" in r.exception.message
    if fn is exit_with_message:
        assert "no input files" in r.exception.message


def test_keyboard_interrupt_is_the_tasks_failure(pool: Pool) -> None:
    assert_own_failure(pool, interrupted, "builtins.KeyboardInterrupt", "in interrupted")


def test_a_base_exception_of_the_tasks_own_is_its_failure(pool: Pool) -> None:
    # Functions travel as source under their own module's name (docs/python-versions.md).
    r = assert_own_failure(pool, own_base_exception,
                           f"{__name__}.own_base_exception.<locals>.Abort", "stop the analysis")
    assert "stop the analysis" in r.exception.message


@pytest.mark.parametrize("fn", [unprintable_exception, unprintable_base_exception])
def test_an_exception_whose_str_raises_is_still_described(pool: Pool, fn) -> None:  # type: ignore[no-untyped-def]
    r = assert_own_failure(pool, fn, f"{fn.__module__}.{fn.__name__}.<locals>.Unprintable",
                           f"in {fn.__name__}")
    assert "str() failed" in r.exception.message


def test_the_caller_gets_the_exit_as_a_failure_not_its_own_exit(pool: Pool) -> None:
    """A SystemExit re-raised by future.result() would end the caller's program (silently,
    for code 0): the caller gets TaskExecutionFailed naming it, with the remote traceback."""
    r = pool.run(make_task(exit_zero))
    ok, value = outcome(r.task_id, r.status, r.result,
                        r.exception.__dict__ if r.exception else None, r.details)
    assert not ok and isinstance(value, TaskExecutionFailed), value
    assert "builtins.SystemExit" in str(value) and "in exit_zero" in value.remote_traceback


@pytest.mark.parametrize(("fn", "how"), [(hard_exit, "exit code 3"),
                                         (killed_by_signal, "signal 9")])
def test_a_worker_that_dies_without_raising_is_lost_and_retried(pool: Pool, fn, how: str) -> None:  # type: ignore[no-untyped-def]
    """os._exit, a signal, a segfault: nothing was raised, so nothing says it was the task's
    doing; the agent retries it as documented in docs/reliability.md."""
    r = pool.run(make_task(fn))
    assert r.status == "failed"
    assert r.exception.type == "fnrelay_endpoint.engines.local.engine.WorkerLostError"
    assert r.details["infrastructure"] is True and how in r.details["reason"]
