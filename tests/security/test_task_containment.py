"""Containment on the local engine, attacked by tasks: processes left behind (same process
group, a new session, a double fork), 200 MB of output aimed at endpoint.log, memory taken
without limit. Each attack runs against both ways of containing (docs/engines.md): cgroups
as this host has them (memory controller under v1, cgroup.kill in v2) and the fallback
(subreaper workers, RLIMIT_DATA), chosen with FNRELAY_LOCAL_CONTAINMENT."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest
from security.local_pool import (
    ENV_CONTAINMENT,
    MODES,
    Pool,
    gone,
    kill_leftovers,
    make_task,
    read_pids,
)

from fnrelay import ShellFunction, serialize
from support.waiting import wait_for

MEMORY_ERROR = "fnrelay_endpoint.engines.local.containment.MemoryLimitExceededError"


@pytest.fixture(scope="module", params=MODES)
def pool(request: pytest.FixtureRequest) -> Iterator[Pool]:
    """One pool per containment mode, shared by this module's tests (a worker start costs)."""
    old = os.environ.get(ENV_CONTAINMENT)
    os.environ[ENV_CONTAINMENT] = request.param
    try:
        p = Pool(1)
    finally:
        if old is None:
            os.environ.pop(ENV_CONTAINMENT, None)
        else:
            os.environ[ENV_CONTAINMENT] = old
    p.mode = request.param  # type: ignore[attr-defined]
    yield p
    p.close()


# --- tasks ------------------------------------------------------------------------------------
def leave_processes_behind(pidfile: str, then: str = "return") -> str:
    """Start a child in the task's process group, one in a new session and a double-forked
    daemon (its parent exits at once), write their pids, then return, sleep or die."""
    import os
    import subprocess
    import time

    same_group = subprocess.Popen(["sleep", "300"])
    new_session = subprocess.Popen(["sleep", "300"], start_new_session=True)
    daemon = subprocess.run(["bash", "-c", "setsid sleep 300 >/dev/null 2>&1 </dev/null & "
                             "echo $!"], capture_output=True, text=True, check=True)
    with open(pidfile + ".tmp", "w") as f:
        f.write(f"{same_group.pid}\n{new_session.pid}\n{daemon.stdout.strip()}\n")
    os.rename(pidfile + ".tmp", pidfile)
    if then == "sleep":
        time.sleep(300)
    elif then == "die":
        os._exit(1)
    return "left"


def flood_output(megabytes: int) -> str:
    """Half the flood from Python, half from a child sharing the task's stdout."""
    import subprocess
    import sys

    chunk = "x" * ((1 << 20) - 1) + "\n"
    for _ in range(megabytes // 2):
        sys.stdout.write(chunk)
    sys.stdout.flush()
    subprocess.run(f"head -c {megabytes // 2}M /dev/zero | tr '\\0' y", shell=True, check=True)
    print("\nthe end of the output")
    print("warning: something to see", file=sys.stderr)
    return "flooded"


def allocate(mib: int) -> int:
    """Touch `mib` MiB (untouched pages cost nothing)."""
    block = b"\1" * (mib << 20)
    return len(block) >> 20


def allocate_in_a_child(mib: int) -> int:
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", f"b = b'1' * ({mib} << 20)"]).returncode


def check_leftovers_end(pids: list[int], of: list[int] | None = None) -> None:
    """Each of `pids` ends; all of `of` (default: `pids`) are killed afterwards either way."""
    try:
        for pid in pids:
            wait_for(lambda pid=pid: gone(pid), f"process {pid} the task left to end", 10)
    finally:
        kill_leftovers(pids if of is None else of)


# --- processes ------------------------------------------------------------------------------------
def test_the_mode_asked_for_is_the_mode_used(pool: Pool) -> None:
    """This host has cgroups (measured: memory under v1, cgroup.kill in v2) and the fallback
    can be chosen on it, so both paths run here."""
    assert pool.engine.info()["containment"] == pool.mode  # type: ignore[attr-defined]


def test_processes_a_task_leaves_behind_end_when_it_returns(pool: Pool, tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    r = pool.run(make_task(leave_processes_behind, str(pidfile)))
    assert (r.status, serialize.deserialize(r.result)) == ("success", "left")
    check_leftovers_end(read_pids(pidfile, 3))
    assert pool.run(make_task(allocate, 1)).status == "success"  # the worker goes on


def test_cancel_ends_every_process_of_the_task(pool: Pool, tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    pool.engine.submit(t := make_task(leave_processes_behind, str(pidfile), "sleep"))
    pids = read_pids(pidfile, 3)
    assert pool.engine.cancel(t.task_id) is True
    assert pool.result().status == "cancelled"
    check_leftovers_end(pids)


def test_walltime_ends_every_process_of_the_task(pool: Pool, tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    r = pool.run(make_task(leave_processes_behind, str(pidfile), "sleep", spec={"walltime": 1}))
    assert r.exception.type == "fnrelay_endpoint.engines.local.engine.WalltimeExceededError"
    check_leftovers_end(read_pids(pidfile, 3))


def test_a_worker_that_dies_takes_its_tasks_processes_along(pool: Pool, tmp_path: Path) -> None:
    """With cgroups, what a dead worker's task started is still in the task's cgroup. The
    fallback kills the dead worker's process group; a process in a session of its own is out
    of reach once its subreaper is gone (docs/engines.md)."""
    pidfile = tmp_path / "pids"
    r = pool.run(make_task(leave_processes_behind, str(pidfile), "die"))
    assert r.details.get("infrastructure") is True  # a lost worker, retried
    pids = read_pids(pidfile, 3)
    check_leftovers_end(pids if pool.mode == "cgroup" else pids[:1], pids)  # type: ignore[attr-defined]


# --- output ---------------------------------------------------------------------------------------
HARNESS = """
import json, queue, sys
from dataclasses import asdict
from pathlib import Path
from fnrelay.wire import TaskMessage
from fnrelay_endpoint.engines.local.engine import LocalEngine

task = TaskMessage(**json.loads(Path(sys.argv[1]).read_text()))
results = queue.Queue()
engine = LocalEngine(1, results.put, lambda _: None, None)
engine.start()
engine.submit(task)
result = asdict(results.get(timeout=60))
result["sizes"] = {k: Path(v).stat().st_size for k, v in result["details"].items()
                   if k.endswith("_file")}
Path(sys.argv[2]).write_text(json.dumps(result))
engine.shutdown()
"""


def test_a_flood_of_output_goes_to_the_tasks_capped_files_not_endpoint_log(
        tmp_path: Path) -> None:
    """The agent's stdout and stderr are endpoint.log (the daemon points both there), and
    workers inherit them: 200 MB from a task and its child grow endpoint.log by less than
    64 KiB; the task's own file keeps 10 MiB and the end; the result carries the tails."""
    task = make_task(flood_output, 200)
    (tmp_path / "task.json").write_text(json.dumps(asdict(task)))
    log = tmp_path / "endpoint.log"
    with log.open("wb") as out:
        subprocess.run([sys.executable, "-c", HARNESS, str(tmp_path / "task.json"),
                        str(tmp_path / "result.json")], stdout=out, stderr=out, check=True,
                       timeout=120)
    assert log.stat().st_size < 64 * 1024, log.stat().st_size
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "success", result
    details = result["details"]
    assert "the end of the output" in details["stdout_tail"]
    assert "warning: something to see" in details["stderr_tail"]
    assert 10 * 2**20 < result["sizes"]["stdout_file"] < 10 * 2**20 + 65 * 1024


def test_a_shell_functions_result_still_carries_its_output(pool: Pool) -> None:
    """ShellResult's stdout and stderr (what users read) are unchanged by the capture."""
    r = pool.run(make_task(ShellFunction("seq 1 5000; echo done >&2")))
    shell = serialize.deserialize(r.result)
    assert (shell.returncode, shell.stdout.splitlines()[-1], shell.stderr) == (0, "5000",
                                                                               "done\n")


# --- memory ---------------------------------------------------------------------------------------
def test_memory_over_the_tasks_limit_fails_it_saying_so(pool: Pool) -> None:
    r = pool.run(make_task(allocate, 512, spec={"memory": "64M"}))
    assert r.status == "failed"
    assert r.exception.type == MEMORY_ERROR, r.exception
    assert "memory limit exceeded (64M)" in r.exception.message
    assert not r.details.get("infrastructure")  # the task's own doing: never retried
    unlimited = pool.run(make_task(allocate, 300))  # the next task has no limit
    assert (unlimited.status, serialize.deserialize(unlimited.result)) == ("success", 300)


def test_memory_within_the_limit_is_fine(pool: Pool) -> None:
    r = pool.run(make_task(allocate, 32, spec={"memory": "256M"}))
    assert (r.status, serialize.deserialize(r.result)) == ("success", 32)


def test_memory_limit_covers_the_tasks_child_processes(pool: Pool) -> None:
    """A cgroup limits the task's processes together; RLIMIT_DATA limits each process, so the
    child fails its own allocation (and the task sees its exit status)."""
    r = pool.run(make_task(allocate_in_a_child, 512, spec={"memory": "64M"}))
    if pool.mode == "cgroup":  # type: ignore[attr-defined]
        assert r.status == "failed" and r.exception.type == MEMORY_ERROR, r
        assert "memory limit exceeded (64M)" in r.exception.message
    else:
        assert (r.status, serialize.deserialize(r.result)) == ("success", 1)
