"""A Globus Compute tutorial, written as a Globus Compute user writes it, run against any SDK.

    python tests/gc/tutorial.py --sdk globus_compute_sdk --endpoint-id UUID [--report out.json]
    python tests/gc/tutorial.py --sdk fnrelay --endpoint-id UUID

It follows Globus Compute's own tutorial and documentation (Client and Executor,
register_function, run/get_result, batches, get_task, futures, ShellFunction, MPIFunction,
TaskExecutionFailed, reload_tasks, endpoint status) and checks each step against Globus
Compute's documented behaviour, not against what fnrelay does. `--sdk` is the one thing that
changes: `globus_compute_sdk` (the official SDK, pointed at a fnrelay broker through
GLOBUS_SDK_ENVIRONMENT=local and client credentials) or `fnrelay` (the import swap, credentials
from FNRELAY_BROKER_URL/FNRELAY_TOKEN). Each step prints one line; a failed step does not stop
the tutorial, and steps needing an earlier one's result say so. tests/gc/test_tutorial.py runs
it once per SDK and engine and turns every step into a test.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import as_completed
from pathlib import Path
from typing import Any

#: Upper bound for one task to finish (seconds); not a timing assertion. --wait overrides.
WAIT = 60.0


# --- the functions of the tutorial: module level, plain Python, as GC's docs write them ---

def add(x: int, y: int = 0) -> int:
    return x + y


def square(x: int) -> int:
    return x * x


def cube(x: int) -> int:
    return x * x * x


def hello(name: str) -> str:
    return f"Hello {name}!"


def fail(message: str) -> None:
    raise ValueError(message)


def wait_for_file(path: str) -> str:
    """Runs until `path` exists: a task that is certainly still pending when asked."""
    import os
    import time

    while not os.path.exists(path):
        time.sleep(0.1)
    return "released"


def platform_info() -> str:
    import platform

    return platform.node()


# --- the runner --------------------------------------------------------------------------

STEPS: list[tuple[str, Callable[[Tutorial], str]]] = []


def step(fn: Callable[[Tutorial], str]) -> Callable[[Tutorial], str]:
    """Register a tutorial step; it returns a short note or raises."""
    STEPS.append((fn.__name__, fn))
    return fn


class Missing(Exception):
    """A step needs what an earlier, failed step should have made."""


class Tutorial:
    """What the steps share: the SDK module, the endpoint, the Client, the Executor."""

    def __init__(self, sdk: str, endpoint_id: str, wait: float, mpi_spec: dict[str, int]):
        self.sdk_name = sdk
        self.sdk = importlib.import_module(sdk)
        self.endpoint_id = endpoint_id
        self.wait = wait
        self.mpi_spec = mpi_spec
        self.made: dict[str, Any] = {}
        self.tmp = Path(tempfile.mkdtemp(prefix="gc-tutorial-"))

    def error_class(self, name: str) -> type[BaseException]:
        """`from <sdk>.errors import name`, as GC users write it."""
        return getattr(importlib.import_module(f"{self.sdk_name}.errors"), name)

    def need(self, key: str) -> Any:
        if key not in self.made:
            raise Missing(f"needs {key!r} from an earlier step, which failed")
        return self.made[key]

    def get_result(self, task_id: str) -> Any:
        """Poll Client.get_result as GC's tutorial does: TaskPending until the task is done."""
        pending = self.error_class("TaskPending")
        deadline = time.monotonic() + self.wait
        while True:
            try:
                return self.need("client").get_result(task_id)
            except pending:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def batch_results(self, task_ids: list[str]) -> dict[str, dict]:
        """Client.get_batch_result until no task is pending."""
        deadline = time.monotonic() + self.wait
        while True:
            results = self.need("client").get_batch_result(task_ids)
            if all(not r.get("pending", True) for r in results.values()) and \
                    set(results) == set(task_ids):
                return results
            if time.monotonic() > deadline:
                raise TimeoutError(f"still pending after {self.wait:.0f}s: {results}")
            time.sleep(0.2)


def is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def check(condition: bool, message: str) -> None:
    """An assertion that survives python -O, with GC's documented behaviour as message."""
    if not condition:
        raise AssertionError(message)


# --- Client --------------------------------------------------------------------------------

@step
def client_created(t: Tutorial) -> str:
    """gcc = Client(): credentials from the environment."""
    t.made["client"] = t.sdk.Client()
    return type(t.made["client"]).__module__


@step
def client_accepts_gc_keywords(t: Tutorial) -> str:
    """Client(do_version_check=False) is a documented keyword of Client."""
    t.sdk.Client(do_version_check=False)
    return "ok"


@step
def version_check(t: Tutorial) -> str:
    """Client.version_check() returns None when this SDK is new enough for the service."""
    check(t.need("client").version_check() is None, "version_check() returns None")
    return "compatible"


@step
def endpoint_status_online(t: Tutorial) -> str:
    status = t.need("client").get_endpoint_status(t.endpoint_id)
    check(status["status"] == "online", f"status is 'online': {status}")
    return status["status"]


@step
def endpoint_metadata(t: Tutorial) -> str:
    """get_endpoint_metadata: a dict of informational fields about the endpoint."""
    meta = t.need("client").get_endpoint_metadata(t.endpoint_id)
    check(isinstance(meta, dict) and bool(meta), f"a non-empty dict: {meta!r}")
    return ", ".join(sorted(meta)[:5])


@step
def endpoints_listed(t: Tutorial) -> str:
    """get_endpoints(): a list of endpoint records, each with its "uuid"."""
    endpoints = t.need("client").get_endpoints()
    ids = [e.get("uuid") for e in endpoints]
    check(t.endpoint_id in ids, f"{t.endpoint_id} among the endpoints' uuids: {endpoints}")
    return f"{len(endpoints)} endpoint(s)"


@step
def register_function(t: Tutorial) -> str:
    fid = t.need("client").register_function(add)
    check(is_uuid(fid), f"a function id (UUID): {fid!r}")
    t.made["add_id"] = str(fid)
    return str(fid)


@step
def register_function_gc_keywords(t: Tutorial) -> str:
    """register_function(func, description=..., public=...) as documented."""
    fid = t.need("client").register_function(square, description="x squared", public=False)
    check(is_uuid(fid), f"a function id (UUID): {fid!r}")
    t.made["square_id"] = str(fid)
    return str(fid)


@step
def run_then_get_result(t: Tutorial) -> str:
    """task_id = gcc.run(2, 3, endpoint_id=..., function_id=...); gcc.get_result(task_id)."""
    tid = t.need("client").run(2, 3, endpoint_id=t.endpoint_id, function_id=t.need("add_id"))
    check(is_uuid(tid), f"run returns a task id: {tid!r}")
    t.made["add_task"] = str(tid)
    result = t.get_result(tid)
    check(result == 5, f"add(2, 3) == 5, got {result!r}")
    return f"{tid} -> {result}"


@step
def run_with_keyword_arguments(t: Tutorial) -> str:
    tid = t.need("client").run(2, endpoint_id=t.endpoint_id, function_id=t.need("add_id"), y=10)
    result = t.get_result(tid)
    check(result == 12, f"add(2, y=10) == 12, got {result!r}")
    return str(result)


@step
def get_task_record(t: Tutorial) -> str:
    """get_task: {"pending": False, "status": "success", "result": <value>, "completion_t"}."""
    task = t.need("client").get_task(t.need("add_task"))
    check(task.get("pending") is False, f"pending is False: {task}")
    check(task.get("status") == "success", f"status 'success': {task}")
    check(task.get("result") == 5, f"result is the deserialized value 5: {task}")
    check("completion_t" in task, f"a completion_t: {task}")
    return f"completion_t={task['completion_t']}"


@step
def task_pending_while_running(t: Tutorial) -> str:
    """get_result of an unfinished task raises TaskPending, whose .reason says why."""
    pending = t.error_class("TaskPending")
    gate = t.tmp / "gate"
    fid = t.need("client").register_function(wait_for_file)
    tid = t.need("client").run(str(gate), endpoint_id=t.endpoint_id, function_id=fid)
    try:
        try:
            t.need("client").get_result(tid)
        except pending as e:
            reason = getattr(e, "reason", None)
            check(isinstance(reason, str) and bool(reason), f"TaskPending.reason: {reason!r}")
        else:
            raise AssertionError("get_result of a running task raises TaskPending")
    finally:
        gate.touch()
    check(t.get_result(tid) == "released", "the task finishes once released")
    return f"reason={reason!r}"


@step
def batch_run_shape(t: Tutorial) -> str:
    """batch_run returns {"tasks": {function_id: [task_ids]}, "task_group_id", "request_id",
    "endpoint_id"}."""
    gcc, fid = t.need("client"), t.need("add_id")
    batch = gcc.create_batch()
    for i in range(4):
        batch.add(fid, args=(i, i))
    r = gcc.batch_run(t.endpoint_id, batch)
    check(isinstance(r, dict), f"a dict: {r!r}")
    check(set(r) >= {"tasks", "task_group_id", "request_id", "endpoint_id"}, f"keys: {r}")
    check(list(r["tasks"]) == [fid] and len(r["tasks"][fid]) == 4, f"tasks by function: {r}")
    check(str(r["endpoint_id"]) == t.endpoint_id, f"endpoint_id: {r}")
    t.made["batch_tasks"] = r["tasks"][fid]
    t.made["batch_group"] = str(r["task_group_id"])
    return f"task group {r['task_group_id']}"


@step
def get_batch_result(t: Tutorial) -> str:
    task_ids = t.need("batch_tasks")
    results = t.batch_results(task_ids)
    values = [results[tid]["result"] for tid in task_ids]
    check(values == [0, 2, 4, 6], f"[0, 2, 4, 6] in task order: {values}")
    check(all(results[tid]["status"] == "success" for tid in task_ids), f"success: {results}")
    return str(values)


@step
def batch_of_two_functions(t: Tutorial) -> str:
    gcc = t.need("client")
    add_id, square_id = t.need("add_id"), t.need("square_id")
    batch = gcc.create_batch()
    batch.add(add_id, args=(1, 2))
    batch.add(square_id, args=(7,))
    batch.add(square_id, kwargs={"x": 8})
    r = gcc.batch_run(t.endpoint_id, batch)
    check(len(r["tasks"][add_id]) == 1 and len(r["tasks"][square_id]) == 2, f"tasks: {r}")
    ids = r["tasks"][add_id] + r["tasks"][square_id]
    results = t.batch_results(ids)
    values = [results[tid]["result"] for tid in ids]
    check(values == [3, 49, 64], f"[3, 49, 64]: {values}")
    return str(values)


@step
def get_batch_result_skips_unknown_ids(t: Tutorial) -> str:
    """An id the service does not know is left out of the answer, not an error."""
    known = t.need("batch_tasks")[0]
    unknown = str(uuid.uuid4())
    results = t.need("client").get_batch_result([known, unknown])
    check(known in results and unknown not in results, f"only the known task: {results}")
    return "skipped"


@step
def remote_error_from_get_result(t: Tutorial) -> str:
    """A function that raises: get_result raises TaskExecutionFailed with the remote trace."""
    failed = t.error_class("TaskExecutionFailed")
    gcc = t.need("client")
    fid = gcc.register_function(fail)
    tid = gcc.run("bad input", endpoint_id=t.endpoint_id, function_id=fid)
    t.made["failed_task"] = str(tid)
    try:
        t.get_result(tid)
    except failed as e:
        check("ValueError" in str(e) and "bad input" in str(e), f"the remote error: {e}")
        return "TaskExecutionFailed"
    raise AssertionError("get_result of a failed task raises TaskExecutionFailed")


@step
def remote_error_from_get_task(t: Tutorial) -> str:
    """get_task of a failed task raises TaskExecutionFailed too (GC reraises on fetch)."""
    failed = t.error_class("TaskExecutionFailed")
    fresh = t.sdk.Client(do_version_check=False)  # no cached record
    try:
        fresh.get_task(t.need("failed_task"))
    except failed as e:
        check("bad input" in str(e), f"the remote error: {e}")
        return "TaskExecutionFailed"
    raise AssertionError("get_task of a failed task raises TaskExecutionFailed")


@step
def error_classes_importable(t: Tutorial) -> str:
    """The error classes GC documents in globus_compute_sdk.errors."""
    names = ["TaskExecutionFailed", "TaskPending", "SerializationError", "DeserializationError",
             "SerdeError", "VersionMismatch", "MaxResultSizeExceeded"]
    for name in names:
        t.error_class(name)
    return ", ".join(names)


# --- Executor ------------------------------------------------------------------------------

@step
def executor_submit(t: Tutorial) -> str:
    """with Executor(endpoint_id=..., client=gcc) as ex: ex.submit(fn, *args).result()."""
    ex = t.sdk.Executor(endpoint_id=t.endpoint_id, client=t.need("client"))
    t.made["executor"] = ex
    future = ex.submit(hello, "World")
    check(future.result(timeout=t.wait) == "Hello World!", "Hello World!")
    t.made["hello_future"] = future
    return "Hello World!"


@step
def future_task_id(t: Tutorial) -> str:
    """A finished future knows its task id, which the Client can look up."""
    future = t.need("hello_future")
    check(is_uuid(future.task_id), f"future.task_id is a UUID: {future.task_id!r}")
    deadline = time.monotonic() + t.wait
    while True:  # the service may record the completion a moment after the result arrived
        try:
            task = t.need("client").get_task(future.task_id)
        except Exception:
            if time.monotonic() > deadline:
                raise
            task = {"pending": True}
        if not task.get("pending", True) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    check(task.get("result") == "Hello World!", f"get_task has the result: {task}")
    return str(future.task_id)


@step
def executor_keyword_arguments(t: Tutorial) -> str:
    ex = t.need("executor")
    check(ex.submit(add, 1, y=5).result(timeout=t.wait) == 6, "add(1, y=5) == 6")
    return "6"


@step
def executor_loop_of_futures(t: Tutorial) -> str:
    """GC has no Executor.map: users loop over submit and collect with as_completed."""
    ex = t.need("executor")
    futures = [ex.submit(square, i) for i in range(6)]
    values = sorted(f.result() for f in as_completed(futures, timeout=t.wait))
    check(values == [0, 1, 4, 9, 16, 25], f"squares: {values}")
    return str(values)


@step
def executor_task_group(t: Tutorial) -> str:
    """After a submission the Executor has a task group id (to re-attach to later)."""
    tg = t.need("executor").task_group_id
    check(is_uuid(tg), f"task_group_id is a UUID: {tg!r}")
    t.made["task_group"] = str(tg)
    return str(tg)


@step
def executor_remote_error(t: Tutorial) -> str:
    """future.result() raises TaskExecutionFailed for an exception raised remotely."""
    failed = t.error_class("TaskExecutionFailed")
    future = t.need("executor").submit(fail, "oops")
    try:
        future.result(timeout=t.wait)
    except failed as e:
        check("ValueError" in str(e) and "oops" in str(e), f"the remote error: {e}")
        return "TaskExecutionFailed"
    raise AssertionError("future.result() raises TaskExecutionFailed")


@step
def submit_to_registered_function(t: Tutorial) -> str:
    future = t.need("executor").submit_to_registered_function(t.need("add_id"), args=(3, 4))
    check(future.result(timeout=t.wait) == 7, "add(3, 4) == 7")
    return "7"


@step
def executor_register_function(t: Tutorial) -> str:
    """Executor.register_function, then submit_to_registered_function with its id."""
    ex = t.need("executor")
    fid = ex.register_function(cube)  # one not yet submitted: GC refuses to register twice
    check(is_uuid(fid), f"a function id: {fid!r}")
    check(ex.submit_to_registered_function(fid, args=(3,)).result(timeout=t.wait) == 27, "27")
    return str(fid)


@step
def executor_endpoint_set_later(t: Tutorial) -> str:
    """Executor() without an endpoint, then ex.endpoint_id = ... before submitting."""
    with t.sdk.Executor(client=t.need("client")) as ex:
        ex.endpoint_id = t.endpoint_id
        check(ex.submit(add, 20, 22).result(timeout=t.wait) == 42, "42")
    return "42"


@step
def executor_gc_keywords(t: Tutorial) -> str:
    """Executor(label=, batch_size=, amqp_port=, api_burst_limit=) are documented keywords."""
    with t.sdk.Executor(endpoint_id=t.endpoint_id, client=t.need("client"), label="tutorial",
                        batch_size=16, amqp_port=None, api_burst_limit=4) as ex:
        check(ex.submit(add, 1, 1).result(timeout=t.wait) == 2, "2")
    return "2"


@step
def reload_tasks(t: Tutorial) -> str:
    """A new Executor re-attaches to a task group: reload_tasks(task_group_id=...) gives a
    future per task of the group, completed ones already set."""
    group = t.need("task_group")
    with t.sdk.Executor(endpoint_id=t.endpoint_id, client=t.need("client")) as ex:
        futures = list(ex.reload_tasks(task_group_id=group))
        check(len(futures) >= 10, f"the group's tasks (10 or more): {len(futures)}")
        values = []
        for f in futures:
            try:
                values.append(f.result(timeout=t.wait))
            except Exception:  # the group holds the failing task of executor_remote_error
                values.append("failed")
    check("Hello World!" in values and 25 in values, f"earlier results are back: {values}")
    return f"{len(futures)} futures"


@step
def executor_shutdown_refuses_submit(t: Tutorial) -> str:
    """After shutdown, submit raises RuntimeError."""
    ex = t.need("executor")
    ex.shutdown()
    try:
        ex.submit(add, 1, 2)
    except RuntimeError:
        return "RuntimeError"
    raise AssertionError("submit after shutdown raises RuntimeError")


# --- ShellFunction and MPIFunction -------------------------------------------------------------

def shell(t: Tutorial, fn: Any, **kwargs: Any) -> Any:
    """Run a ShellFunction through a fresh Executor (the shared one is shut down by now)."""
    with t.sdk.Executor(endpoint_id=t.endpoint_id, client=t.need("client")) as ex:
        return ex.submit(fn, **kwargs).result(timeout=t.wait)


@step
def shell_function_stdout(t: Tutorial) -> str:
    result = shell(t, t.sdk.ShellFunction("echo '{message}'"), message="hello shell")
    check(result.returncode == 0, f"returncode 0: {result!r}")
    check("hello shell" in result.stdout, f"stdout: {result.stdout!r}")
    check(result.cmd == "echo 'hello shell'", f"cmd as run: {result.cmd!r}")
    return result.stdout.strip()


@step
def shell_function_return_code_and_stderr(t: Tutorial) -> str:
    """A failing command is a result, not an exception: returncode, stderr, exception_name."""
    result = shell(t, t.sdk.ShellFunction("echo oops >&2; exit 3"))
    check(result.returncode == 3, f"returncode 3: {result!r}")
    check("oops" in result.stderr, f"stderr: {result.stderr!r}")
    check(result.exception_name == "subprocess.CalledProcessError",
          f"exception_name: {getattr(result, 'exception_name', None)!r}")
    check(str(result).startswith("exit code: 3"), f"str(): {str(result)!r}")
    return f"returncode {result.returncode}"


@step
def shell_function_walltime(t: Tutorial) -> str:
    """walltime (float seconds): the command is stopped, returncode 124 like timeout(1)."""
    result = shell(t, t.sdk.ShellFunction("sleep 30", walltime=0.5))
    check(result.returncode == 124, f"returncode 124: {result!r}")
    check(result.exception_name == "subprocess.TimeoutExpired",
          f"exception_name: {getattr(result, 'exception_name', None)!r}")
    return "124"


@step
def shell_function_values_as_written(t: Tutorial) -> str:
    """GC inserts keyword values into the command as written (no quoting)."""
    result = shell(t, t.sdk.ShellFunction("ls {flags} /"), flags="-d -a")
    check(result.returncode == 0 and result.stdout.strip() == "/", f"ls -d -a /: {result!r}")
    return result.cmd


@step
def shell_function_return_dict(t: Tutorial) -> str:
    result = shell(t, t.sdk.ShellFunction("echo dict", return_dict=True, name="echo_dict"))
    check(isinstance(result, dict), f"a dict: {result!r}")
    check(result["returncode"] == 0 and "dict" in result["stdout"], f"fields: {result}")
    return ", ".join(sorted(result))


@step
def mpi_function(t: Tutorial) -> str:
    """MPIFunction with a resource_specification: $PARSL_MPI_PREFIX launches the ranks."""
    ranks = t.mpi_spec["num_nodes"] * t.mpi_spec["ranks_per_node"]
    with t.sdk.Executor(endpoint_id=t.endpoint_id, client=t.need("client")) as ex:
        ex.resource_specification = dict(t.mpi_spec)
        result = ex.submit(t.sdk.MPIFunction("echo rank")).result(timeout=t.wait)
    check(result.returncode == 0, f"returncode 0: {result!r}")
    lines = result.stdout.split()
    check(lines == ["rank"] * ranks, f"{ranks} ranks each print 'rank': {result.stdout!r}")
    return f"{ranks} ranks"


@step
def endpoint_runs_where_configured(t: Tutorial) -> str:
    """The endpoint runs the function on its host (here: this machine)."""
    import platform

    with t.sdk.Executor(endpoint_id=t.endpoint_id, client=t.need("client")) as ex:
        node = ex.submit(platform_info).result(timeout=t.wait)
    check(node == platform.node(), f"{node!r} == {platform.node()!r}")
    return node


def run(t: Tutorial, only: set[str] | None = None) -> list[dict[str, Any]]:
    outcomes = []
    for number, (name, fn) in enumerate(STEPS, start=1):
        if only and name not in only:
            continue
        started = time.monotonic()
        try:
            note, ok = fn(t), True
        except Exception as e:
            ok = False
            lines = str(e).strip().splitlines()
            note = f"{type(e).__name__}: {lines[-1] if lines else ''}"
            if not isinstance(e, Missing):
                traceback.print_exc(file=sys.stderr)
        seconds = round(time.monotonic() - started, 2)
        outcomes.append({"step": number, "name": name, "ok": ok, "note": note,
                         "seconds": seconds})
        print(f"{number:02d} {'ok  ' if ok else 'FAIL'} {name}: {note} ({seconds}s)", flush=True)
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdk", choices=["globus_compute_sdk", "fnrelay"], required=True)
    parser.add_argument("--endpoint-id", required=True)
    parser.add_argument("--wait", type=float, default=WAIT, help="seconds one task may take")
    parser.add_argument("--mpi-spec", default='{"num_nodes": 1, "ranks_per_node": 2}',
                        help="resource_specification of the MPIFunction step (JSON)")
    parser.add_argument("--report", help="write the outcomes here as JSON")
    parser.add_argument("--only", nargs="*", help="run only these steps")
    args = parser.parse_args()
    tutorial = Tutorial(args.sdk, args.endpoint_id, args.wait, json.loads(args.mpi_spec))
    outcomes = run(tutorial, set(args.only) if args.only else None)
    if args.report:
        Path(args.report).write_text(json.dumps(outcomes, indent=1))
    passed = sum(o["ok"] for o in outcomes)
    print(f"{passed} of {len(outcomes)} steps passed with {args.sdk}", flush=True)
    os._exit(0 if passed == len(outcomes) else 1)  # SDK threads must not keep us alive


if __name__ == "__main__":
    main()
