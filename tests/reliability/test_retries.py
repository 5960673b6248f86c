"""Retries on infrastructure failure, poison tasks, walltime and result size: real endpoints.

Fixtures (tests/conftest.py): ``client`` (alice), ``make_endpoint(name, **config)``.
"""

from __future__ import annotations

import os

import pytest

from fnrelay import Executor
from fnrelay.devstack.processes import LocalStackError
from support.waiting import wait_for, wait_recorded


def die_once(marker):
    """Kill its own worker the first time (a lost worker), succeed the next."""
    import os
    import signal

    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


def always_die():
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def count_and_fail(counter):
    with open(counter, "a") as f:
        f.write("x")
    raise ValueError("the task's own mistake")


def sleep_for(seconds):
    import time

    time.sleep(seconds)
    return seconds


def big_result(n):
    return "x" * n


def kill_endpoint(marker):
    """A poison task: takes its endpoint process down (after its start is journaled). The
    worker's parent is multiprocessing's fork server, whose parent is the endpoint."""
    import os
    import signal
    import time

    with open(marker, "a") as f:
        f.write("x")
    time.sleep(3.0)
    with open(f"/proc/{os.getppid()}/stat") as f:
        endpoint_pid = int(f.read().rsplit(")", 1)[1].split()[1])
    os.kill(endpoint_pid, signal.SIGKILL)
    time.sleep(30)


def history(client, task_id, final):
    """(status, detail) of each step, once the broker has recorded the task as `final` (the
    Executor has its result straight from the endpoint; the broker's record follows)."""
    return [(h["status"], h["detail"]) for h in wait_recorded(client, task_id, final)["history"]]


def test_lost_worker_is_retried_and_the_retry_is_in_the_history(client, make_endpoint, tmp_path):
    ep = make_endpoint("retry-once")
    with Executor(ep.endpoint_id, client=client) as ex:
        fut = ex.submit(die_once, str(tmp_path / "died"))
        assert fut.result(timeout=120) == "survived"
    steps = history(client, fut.task_id, "success")
    retry = [d for s, d in steps if s == "waiting-for-endpoint" and d.startswith("retry 1 of")]
    assert retry and "worker lost (signal 9)" in retry[0], steps
    assert client.task_record(fut.task_id)["details"]["attempt"] == 2


def test_a_task_that_always_loses_its_worker_fails_after_max_retries(client, make_endpoint):
    ep = make_endpoint("retry-limit")
    with Executor(ep.endpoint_id, client=client, max_retries=2) as ex:
        fut = ex.submit(always_die)
        with pytest.raises(Exception) as err:
            fut.result(timeout=120)
    assert "gave up after 3 attempt(s)" in str(err.value)
    assert "max_retries=2" in str(err.value)
    retries = [d for s, d in history(client, fut.task_id, "failed") if d.startswith("retry ")]
    assert len(retries) == 2


def test_the_endpoint_default_applies_and_zero_means_no_retry(client, make_endpoint):
    ep = make_endpoint("no-retry", max_retries=0)
    with Executor(ep.endpoint_id, client=client) as ex:
        fut = ex.submit(always_die)
        with pytest.raises(Exception) as err:
            fut.result(timeout=120)
    assert "gave up after 1 attempt(s)" in str(err.value)


def test_a_user_exception_is_never_retried(client, make_endpoint, tmp_path):
    ep = make_endpoint("user-error")
    counter = tmp_path / "runs"
    with Executor(ep.endpoint_id, client=client, max_retries=3) as ex:
        fut = ex.submit(count_and_fail, str(counter))
        with pytest.raises(ValueError, match="the task's own mistake"):
            fut.result(timeout=120)
    assert counter.read_text() == "x"


def test_walltime_kills_a_local_task_and_fails_it(client, make_endpoint):
    ep = make_endpoint("walltime")
    with Executor(ep.endpoint_id, client=client,
                  resource_specification={"walltime": 2}) as ex:
        slow, quick = ex.submit(sleep_for, 600), ex.submit(sleep_for, 0)
        with pytest.raises(Exception, match=r"walltime exceeded \(2 s\)"):
            slow.result(timeout=120)
        assert quick.result(timeout=120) == 0
    steps = [s for s, _ in history(client, slow.task_id, "failed")]
    assert steps.count("waiting-for-endpoint") == 1


def test_a_result_over_the_size_limit_fails_saying_how_big_it_was(client, make_endpoint):
    ep = make_endpoint("size-limit", result_size_limit=100_000)
    with Executor(ep.endpoint_id, client=client) as ex:
        small, big = ex.submit(big_result, 1_000), ex.submit(big_result, 300_000)
        assert len(small.result(timeout=120)) == 1_000
        with pytest.raises(Exception) as err:
            big.result(timeout=120)
    text = str(err.value)
    assert "result size limit of 0.1 MB (100000 bytes)" in text
    assert "0.3 MB serialized" in text


def test_a_task_that_kills_its_endpoint_ends_failed_after_the_limit(client, make_endpoint,
                                                                      tmp_path):
    ep = make_endpoint("poison", max_retries=1)
    marker = tmp_path / "starts"
    with Executor(ep.endpoint_id, client=client) as ex:
        fut = ex.submit(kill_endpoint, str(marker))
        for _ in range(2):  # it kills the endpoint; restart it each time, as systemd would
            wait_for(lambda: not ep.running(), "the poison task to kill the endpoint")
            ep._reap()
            try:
                ep.start()
            except LocalStackError:  # killed again before the broker saw it online
                pass
        with pytest.raises(Exception) as err:
            fut.result(timeout=120)
    assert "the endpoint stopped 2 time(s) while running this task" in str(err.value)
    assert marker.read_text() == "xx"
    assert ep.running()  # the endpoint survived the poison task in the end
    assert os.path.exists(marker)
