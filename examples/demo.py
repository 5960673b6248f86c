"""fnrelay demo: 100 functions, a remote failure and a shell command on one endpoint.

Run it against the local stack (what `make demo` does):

    eval "$(fnrelay local up)"
    python examples/demo.py
    fnrelay local down
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import sys
import time

from tqdm import tqdm

import fnrelay

N_TASKS = 100


def collatz_steps(n: int) -> int:
    """A small computation: steps of the Collatz sequence from n down to 1."""
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


def divide(a: float, b: float) -> float:
    return a / b


def main() -> int:
    endpoint_id = os.environ.get("FNRELAY_ENDPOINT_ID")
    if not endpoint_id:
        print("set FNRELAY_ENDPOINT_ID first, e.g. with: eval \"$(fnrelay local up)\"",
              file=sys.stderr)
        return 2
    broker_url = os.environ.get("FNRELAY_BROKER_URL", "?")
    print(f"endpoint {endpoint_id} at {broker_url}")
    print(f"dashboard: {broker_url}/dashboard (log in with your token: echo $FNRELAY_TOKEN)")

    with fnrelay.Executor(endpoint_id) as ex:
        # 1. Many small functions, results as they complete.
        start = time.perf_counter()
        futures = {ex.submit(collatz_steps, n): n for n in range(1, N_TASKS + 1)}
        steps = {}
        for fut in tqdm(cf.as_completed(futures), total=N_TASKS, desc="collatz", unit="task"):
            steps[futures[fut]] = fut.result()
        elapsed = time.perf_counter() - start
        longest = max(steps, key=steps.get)
        print(f"{N_TASKS} tasks in {elapsed:.2f} s ({N_TASKS / elapsed:.1f} tasks/s); "
              f"longest chain below {N_TASKS + 1}: n={longest} with {steps[longest]} steps")

        # 2. A call that fails remotely: the remote exception comes back with its traceback.
        failing = ex.submit(divide, 1, 0)
        try:
            failing.result()
        except ZeroDivisionError as e:  # also a fnrelay.errors.TaskExecutionFailed
            print(f"\ntask {failing.task_id} failed remotely, as intended: {e!r}")
            print("remote traceback:\n" + e.remote_traceback.rstrip())

        # 3. A shell command; {name} is filled in from the call's kwargs as written.
        hello = fnrelay.ShellFunction("echo hello from {name} on $(hostname)")
        shell = ex.submit(hello, name="fnrelay").result()
        print(f"shell command {shell.cmd!r} exited {shell.returncode}: {shell.stdout.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
