"""The local engine's pool: results, failures, and cancels that really stop the work."""

from __future__ import annotations

import os
import queue
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fnrelay import serialize
from fnrelay.errors import ConfigurationError
from fnrelay.processes import pid_alive
from fnrelay.wire import ResultMessage, StatusUpdate, TaskMessage, new_id
from fnrelay_endpoint.engines.base import RUNNING_HOLD
from fnrelay_endpoint.engines.local.engine import LocalEngine

WAIT = 60.0  # an upper bound for things to happen, not a timing assertion


def make_task(fn, *args, **kwargs) -> TaskMessage:  # type: ignore[no-untyped-def]
    return TaskMessage(task_id=new_id(), function_id=new_id(),
                       function=serialize.serialize_function(fn),
                       payload=serialize.serialize_args(args, kwargs))


def square(x):  # type: ignore[no-untyped-def]
    return x * x


def divide(a, b):  # type: ignore[no-untyped-def]
    return a / b


def spawn_sleep_and_wait(pidfile):  # type: ignore[no-untyped-def]
    """Like a ShellFunction: a child process does the work; its pid goes to `pidfile`."""
    import subprocess

    child = subprocess.Popen(["sleep", "300"])
    with open(pidfile + ".tmp", "w") as f:
        f.write(str(child.pid))
    os.rename(pidfile + ".tmp", pidfile)
    child.wait()
    return "finished"


def wait_until(check, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + WAIT
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)
    return value


def gone(pid: int) -> bool:
    """True once `pid` no longer runs (zombies count as gone)."""
    return not pid_alive(pid)


class Pool:
    def __init__(self, workers: int, idle_timeout: float | None = None):
        self.results: queue.Queue[ResultMessage] = queue.Queue()
        self.updates: queue.Queue[StatusUpdate] = queue.Queue()
        self.engine = LocalEngine(workers, self.results.put, self.updates.put, idle_timeout)

    def result(self) -> ResultMessage:
        return self.results.get(timeout=WAIT)

    def running(self, task_id: str) -> StatusUpdate:
        while True:
            update = self.updates.get(timeout=WAIT)
            if update.task_id == task_id:
                return update


def cancel_running_sleep(p: Pool, tmp_path: Path) -> None:
    """Start a task whose child sleeps, cancel it: cancelled, and the child is killed too."""
    pidfile = str(tmp_path / "sleep.pid")
    p.engine.submit(t := make_task(spawn_sleep_and_wait, pidfile))
    sleep_pid = int(wait_until(lambda: os.path.exists(pidfile) and open(pidfile).read(),
                               "the task to start its sleep child"))
    assert p.engine.cancel(t.task_id) is True
    r = p.result()
    assert (r.task_id, r.status) == (t.task_id, "cancelled")
    wait_until(lambda: gone(sleep_pid), "the sleep child to be killed")


@pytest.fixture
def pool() -> Iterator[Pool]:
    p = Pool(2)
    p.engine.start()
    yield p
    p.engine.shutdown()


def test_runs_tasks_and_reports_results_and_running(pool: Pool) -> None:
    tasks = [make_task(square, i) for i in range(10)]
    for t in tasks:
        pool.engine.submit(t)
    results = {r.task_id: r for r in (pool.result() for _ in tasks)}
    assert {tid: serialize.deserialize(r.result) for tid, r in results.items()} == {
        t.task_id: i * i for i, t in enumerate(tasks)}
    assert all(r.status == "success" for r in results.values())
    assert {r.details["pid"] for r in results.values()} != {os.getpid()}  # other processes


def test_a_task_running_longer_than_the_hold_is_reported_running(pool: Pool) -> None:
    """Short tasks are reported by their results alone (which carry their start times); one
    still running after RUNNING_HOLD gets a "running" update while it runs."""
    pool.engine.submit(slow := make_task(time.sleep, 20 * RUNNING_HOLD))
    update = pool.running(slow.task_id)
    assert update.status == "running" and "local worker pid" in update.detail
    assert pool.results.empty()  # reported while it still runs
    assert pool.result().task_id == slow.task_id


def test_remote_exception_keeps_type_and_traceback(pool: Pool) -> None:
    pool.engine.submit(make_task(divide, 1, 0))
    r = pool.result()
    assert r.status == "failed"
    assert r.exception.type == "builtins.ZeroDivisionError"
    assert "in divide" in r.exception.traceback


def test_cancel_of_running_task_kills_its_process_group(tmp_path: Path) -> None:
    p = Pool(1)
    p.engine.start()
    try:
        cancel_running_sleep(p, tmp_path)

        p.engine.submit(after := make_task(square, 7))  # a fresh worker took its place
        r = p.result()
        assert (r.task_id, serialize.deserialize(r.result)) == (after.task_id, 49)
    finally:
        p.engine.shutdown()


def test_cancel_of_queued_task_means_it_never_runs(tmp_path: Path) -> None:
    p = Pool(1)
    p.engine.start()
    try:
        pidfile = str(tmp_path / "sleep.pid")
        blocker = make_task(spawn_sleep_and_wait, pidfile)
        marker = tmp_path / "ran"
        queued = make_task(Path.touch, marker)
        p.engine.submit(blocker)
        p.engine.submit(queued)
        wait_until(lambda: os.path.exists(pidfile), "the blocker to start")
        assert p.engine.cancel(queued.task_id) is True
        r = p.result()
        assert (r.task_id, r.status) == (queued.task_id, "cancelled")

        assert p.engine.cancel(blocker.task_id) is True
        assert p.result().task_id == blocker.task_id
        p.engine.submit(done := make_task(square, 2))
        assert p.result().task_id == done.task_id  # the queue moved on without `queued`
        assert not marker.exists()
    finally:
        p.engine.shutdown()


def test_cancel_of_unknown_task_is_false(pool: Pool) -> None:
    assert pool.engine.cancel(new_id()) is False


def test_shutdown_kills_running_work_and_reports_nothing(tmp_path: Path) -> None:
    p = Pool(1)
    p.engine.start()
    pidfile = str(tmp_path / "sleep.pid")
    p.engine.submit(make_task(spawn_sleep_and_wait, pidfile))
    sleep_pid = int(wait_until(lambda: os.path.exists(pidfile) and open(pidfile).read(),
                               "the task to start"))
    p.engine.shutdown()
    wait_until(lambda: gone(sleep_pid), "the sleep child to be killed")
    assert p.results.empty()  # the journal, not the engine, re-runs it later


def test_workers_start_on_first_task_and_stop_when_idle() -> None:
    p = Pool(1, idle_timeout=0.5)
    p.engine.start()
    try:
        time.sleep(0.2)
        assert p.engine._slots[0].process is None  # an idle endpoint holds no worker
        p.engine.submit(make_task(square, 3))
        first = p.result()
        assert serialize.deserialize(first.result) == 9
        pid = first.details["pid"]
        wait_until(lambda: gone(pid), "the idle worker to be stopped")
        p.engine.submit(make_task(square, 4))  # a fresh worker takes the next task
        second = p.result()
        assert serialize.deserialize(second.result) == 16 and second.details["pid"] != pid
    finally:
        p.engine.shutdown()


def test_a_task_for_an_idle_worker_goes_straight_down_its_pipe(tmp_path: Path) -> None:
    """Warm path: `submit` hands the task to the idle worker itself; the running update, a
    walltime and a cancel still apply to a task handed down this way."""
    p = Pool(1)
    p.engine.start()
    try:
        p.engine.submit(make_task(square, 2))
        warm_pid = p.result().details["pid"]
        wait_until(lambda: p.engine._slots[0].idle, "the worker to idle")

        p.engine.submit(t := make_task(square, 5))
        r = p.result()
        assert (r.task_id, serialize.deserialize(r.result), r.details["pid"]) == (
            t.task_id, 25, warm_pid)
        assert p.engine._slots[0].handed  # not through the queue

        wait_until(lambda: p.engine._slots[0].idle, "the worker to idle")
        slow = make_task(time.sleep, 30)
        slow.resource_specification = {"walltime": 1}
        p.engine.submit(slow)
        r = p.result()
        assert (r.task_id, r.status, r.exception.type) == (
            slow.task_id, "failed", "fnrelay_endpoint.engines.local.engine.WalltimeExceededError")

        p.engine.submit(make_task(square, 3))  # a killed worker is replaced on demand
        assert serialize.deserialize(p.result().result) == 9
        wait_until(lambda: p.engine._slots[0].idle, "the fresh worker to idle")
        cancel_running_sleep(p, tmp_path)
    finally:
        p.engine.shutdown()


def test_the_next_task_of_a_caller_waiting_on_a_result_takes_the_same_worker() -> None:
    """A lone caller submits its next task as soon as it has the last result, which may be
    while the engine is still reporting that result: the worker that answered takes it, and
    no second worker is started for it (a spawn costs a core for a moment)."""
    results: queue.Queue[ResultMessage] = queue.Queue()
    engine: LocalEngine

    def on_result(r: ResultMessage) -> None:
        results.put(r)
        if results.qsize() == 1:  # still inside the report of the first result
            engine.submit(make_task(square, 6))
            time.sleep(0.5)  # reporting takes a while (a publish, a busy core)

    engine = LocalEngine(2, on_result, lambda _: None, None)
    engine.start()
    try:
        engine.submit(make_task(square, 5))
        first, second = results.get(timeout=WAIT), results.get(timeout=WAIT)
        assert serialize.deserialize(second.result) == 36
        assert second.details["pid"] == first.details["pid"]
        assert engine._slots[1].process is None  # never started
    finally:
        engine.shutdown()


@pytest.mark.parametrize(("main", "preloaded"), [
    ("fnrelay_endpoint.cli", True), ("fnrelay_endpoint.multiuser.child", True),
    ("fnrelay_endpoint.__main__", False), ("pytest.__main__", False),
    ("someone_elses.app", False), (None, False)])
def test_the_forkserver_preloads_the_endpoint_module_it_runs_as(
        monkeypatch: pytest.MonkeyPatch, main: str | None, preloaded: bool) -> None:
    """multiprocessing imports the main module again in every new worker (a `__main__` one
    excepted, as a background endpoint's is); the forkserver imports the endpoint's own
    (`python -m fnrelay_endpoint.cli`) once for all of them."""
    import importlib.machinery
    import types

    from fnrelay_endpoint.engines.local import engine as local

    fake = types.ModuleType("__main__")
    fake.__spec__ = importlib.machinery.ModuleSpec(main, None) if main else None
    monkeypatch.setitem(sys.modules, "__main__", fake)
    assert local._preload() == ["fnrelay_endpoint.worker", "fnrelay_endpoint.engines.local.engine",
                                *([main] if preloaded else [])]


def test_a_worker_runs_the_code_each_task_carries_whatever_its_function_id() -> None:
    """Functions are cached per worker by their code: a task whose function id was seen with
    other code (a buggy or forged direct-path task) runs its own code, and the next task
    with that id and the first code runs the first code again."""
    first = make_task(square, 4)
    other = make_task(divide, 4, 2)
    other.function_id = first.function_id
    again = make_task(square, 5)
    again.function_id = first.function_id
    p = Pool(1)  # one worker: all three run in the same process
    p.engine.start()
    try:
        values = []
        for t in (first, other, again):
            p.engine.submit(t)
            values.append(serialize.deserialize(p.result().result))
        assert values == [16, 2.0, 25]
    finally:
        p.engine.shutdown()


def mpi_command() -> str:
    """What an MPIFunction would run in this worker."""
    from fnrelay import MPIFunction

    return MPIFunction("hostname").format_command()


def mpi_prefixes() -> tuple[str, str]:
    import os

    return os.environ["FNRELAY_MPI_PREFIX"], os.environ["PARSL_MPI_PREFIX"]


def test_the_launcher_is_exported_under_both_names_for_either_sdks_mpifunction(
        pool: Pool) -> None:
    """Globus Compute's MPIFunction runs `$PARSL_MPI_PREFIX cmd`: the same launcher as ours,
    for GC's single-node layout too, and a later task's value replaces the earlier one's."""
    for spec, ranks in (({"num_nodes": 1, "ranks_per_node": 2}, 2), ({"num_ranks": 3}, 3),
                        ({}, 1)):
        t = make_task(mpi_prefixes)
        t.resource_specification = spec
        pool.engine.submit(t)
        assert serialize.deserialize(pool.result().result) == (f"mpiexec -n {ranks}",) * 2


def test_an_mpi_layout_reaches_the_task_as_its_rank_count(pool: Pool) -> None:
    """MPIFunction starts `mpiexec -n $FNRELAY_NUM_RANKS`: the local engine sets it from the
    task's layout (it used to ignore the layout: one rank whatever was asked), and a task
    without a layout on the same worker gets the default again."""
    with_layout = make_task(mpi_command)
    with_layout.resource_specification = {"num_ranks": 2}
    pool.engine.submit(with_layout)
    assert serialize.deserialize(pool.result().result) == "mpiexec -n 2 hostname"
    pool.engine.submit(make_task(mpi_command))
    assert serialize.deserialize(pool.result().result) == "mpiexec -n 1 hostname"


def mpi_ranks() -> tuple[int, str, str]:
    """An MPIFunction's run in this worker: return code, stdout, stderr."""
    from fnrelay import MPIFunction

    result = MPIFunction("echo rank").__call__()
    return result.returncode, result.stdout, result.stderr  # type: ignore[union-attr]


def test_mpi_ranks_start_on_an_endpoint_run_as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenMPI refuses root unless told; an endpoint run as root (as the README's commands
    run it) used to answer every MPIFunction with returncode 1 and a blank stdout."""
    for name in ("OMPI_ALLOW_RUN_AS_ROOT", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"):
        monkeypatch.delenv(name, raising=False)
    p = Pool(1)
    p.engine.start()
    try:
        t = make_task(mpi_ranks)
        t.resource_specification = {"num_nodes": 1, "ranks_per_node": 2}
        p.engine.submit(t)
        r = p.result()
    finally:
        p.engine.shutdown()
    assert r.status == "success", r.exception
    returncode, stdout, stderr = serialize.deserialize(r.result)
    assert (returncode, stdout.split()) == (0, ["rank", "rank"]), stderr


def test_mpi_options_reach_the_launcher_so_more_ranks_than_cores_start() -> None:
    """engine.mpi_options goes between `mpiexec` and `-n`: `--oversubscribe` lets a task ask
    for more ranks than this machine has cores."""
    config = LocalEngine.validate_config(
        {"type": "local", "max_workers": 1, "mpi_options": ["--oversubscribe"]}, "test")
    results: queue.Queue[ResultMessage] = queue.Queue()
    engine = LocalEngine.from_config(config, Path(tempfile.mkdtemp()), results.put,
                                     lambda update: None)
    engine.start()
    try:
        ranks = (os.cpu_count() or 1) + 2
        t = make_task(mpi_ranks)
        t.resource_specification = {"num_ranks": ranks}
        engine.submit(t)
        r = results.get(timeout=WAIT)
    finally:
        engine.shutdown()
    assert r.status == "success", r.exception
    returncode, stdout, stderr = serialize.deserialize(r.result)
    assert (returncode, stdout.split()) == (0, ["rank"] * ranks), stderr


def cwd() -> str:
    return os.getcwd()


def test_tasks_start_in_the_working_dir_even_under_a_relative_endpoint_dir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each task starts in `tasks_working_dir`; the task output root stays where it is when
    the endpoint's directory was given relative (FNRELAY_HOME=relative/path)."""
    monkeypatch.chdir(tmp_path)
    results: queue.Queue[ResultMessage] = queue.Queue()
    engine = LocalEngine(1, results.put, lambda update: None, output_dir=Path("ep"))
    engine.start()
    try:
        for _ in range(2):  # the second on the same worker, after the first moved it there
            engine.submit(make_task(cwd))
            r = results.get(timeout=WAIT)
            assert r.status == "success", r.exception
            assert serialize.deserialize(r.result) == str(tmp_path / "ep" / "tasks_working_dir")
    finally:
        engine.shutdown()


def test_mpi_options_that_are_not_a_list_of_options_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="'engine.mpi_options' must be a list"):
        LocalEngine.validate_config({"type": "local", "mpi_options": "--oversubscribe"}, "t")


@pytest.mark.parametrize(("spec", "named"), [
    ({"container": {"type": "apptainer", "image": "/images/a.sif"}},
     "'container': the local engine runs tasks on the endpoint's own machine as they are"),
    ({"conda": {"env": "analysis"}}, "'conda': the local engine"),
    ({"walltime": "ten minutes"}, "'walltime'"),
    ({"num_nodes": 2, "num_ranks": 2}, "'num_nodes': the local engine has one node (got 2)"),
    ({"cores": 4}, "'cores': unknown key"),
])
def test_a_resource_specification_the_local_engine_cannot_honour_fails_the_task(
        pool: Pool, spec: dict, named: str) -> None:
    """Refused, naming the key, rather than run as if it had not been asked for."""
    t = make_task(square, 3)
    t.resource_specification = spec
    pool.engine.submit(t)
    r = pool.result()
    assert (r.task_id, r.status) == (t.task_id, "failed")
    assert r.exception.type == "fnrelay_endpoint.ResourceSpecificationError"
    assert named in r.exception.message, r.exception.message
    pool.engine.submit(ok := make_task(square, 3))  # the pool goes on
    assert (pool.result().task_id, True) == (ok.task_id, True)


def test_placement_requests_for_a_scheduler_are_accepted_without_effect(pool: Pool) -> None:
    """This machine answers cores or a partition as it is (a Harvester queue sends them for
    every worker); a memory request it can meet is met."""
    t = make_task(square, 4)
    t.resource_specification = {"num_nodes": 1, "ranks_per_node": 1, "cores_per_rank": 2,
                                "memory": "2000M", "walltime": 600, "partition": "debug",
                                "account": "atlas"}
    pool.engine.submit(t)
    r = pool.result()
    assert (r.status, serialize.deserialize(r.result)) == ("success", 16)


@pytest.mark.parametrize(("key", "value", "says"), [
    ("containment", "docker", "'engine.containment' must be one of auto, cgroup, fallback"),
    ("output_limit", "10M", "'engine.output_limit' must be a number of bytes"),
    ("output_retention", 0, "'engine.output_retention' must be a positive number"),
])
def test_the_containment_and_output_keys_are_checked(key: str, value: object, says: str) -> None:
    from fnrelay.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=says):
        LocalEngine.validate_config({"type": "local", key: value}, "config.yaml")
    config = LocalEngine.validate_config({"type": "local", key: None if key ==
                                          "output_retention" else 0 if key == "output_limit"
                                          else "fallback"}, "config.yaml")
    engine = LocalEngine.from_config(config, Path("/nonexistent"), lambda _: None,
                                     lambda _: None)
    assert (engine._containment.requested, engine.output_limit, engine.output_retention) == {
        "containment": ("fallback", 10 * 1024 * 1024, 7 * 24 * 3600),
        "output_limit": ("auto", 0, 7 * 24 * 3600),
        "output_retention": ("auto", 10 * 1024 * 1024, None)}[key]


def print_lines(n):  # type: ignore[no-untyped-def]
    for i in range(n):
        print(f"line {i}")
    return n


def test_a_tasks_output_is_kept_up_to_the_engines_output_limit(tmp_path: Path) -> None:
    """output_limit bytes per stream in the task's own file, then its end after a note."""
    engine_results: queue.Queue[ResultMessage] = queue.Queue()
    engine = LocalEngine(1, engine_results.put, lambda _: None, None, output_dir=tmp_path,
                         output_limit=1000)
    engine.start()
    try:
        engine.submit(t := make_task(print_lines, 5000))
        r = engine_results.get(timeout=WAIT)
        assert r.details["stdout_file"] == str(tmp_path / "tasks" / t.task_id / "stdout")
        text = (tmp_path / "tasks" / t.task_id / "stdout").read_text()
        assert text.startswith("line 0\nline 1\n")
        assert "went over its 1000-byte limit" in text and text.endswith("line 4999\n")
        assert r.details["stdout_tail"].endswith("line 4999")
        assert "stderr_file" not in r.details  # a quiet stream leaves no file
        engine.submit(quiet := make_task(square, 2))
        assert "stdout_file" not in engine_results.get(timeout=WAIT).details
        assert not (tmp_path / "tasks" / quiet.task_id).exists()
    finally:
        engine.shutdown()


def test_task_output_older_than_the_retention_is_removed_at_start(tmp_path: Path) -> None:
    old, recent = tmp_path / "tasks" / "old-task", tmp_path / "tasks" / "recent-task"
    for d in (old, recent):
        d.mkdir(parents=True)
        (d / "stdout").write_text("output\n")
    week_ago = time.time() - 8 * 24 * 3600
    for path in (old / "stdout", old):
        os.utime(path, (week_ago, week_ago))
    engine = LocalEngine(1, lambda _: None, lambda _: None, None, output_dir=tmp_path)
    engine.start()
    try:
        wait_until(lambda: not old.exists(), "the old task's output to be removed")
        assert (recent / "stdout").read_text() == "output\n"
    finally:
        engine.shutdown()
