"""`fnrelay local up|status|down`: what README and `make demo` promise.

A user runs `eval "$(fnrelay local up)"` and then the SDK works with nothing but the exported
variables; `down` leaves none of the processes it started.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fnrelay.devstack.rabbitmq import make_shared_tmpdir
from fnrelay.processes import pid_alive
from support.stack_processes import left_running

FNRELAY = str(Path(sys.executable).parent / "fnrelay")
EXPORTS = ("FNRELAY_HOME", "FNRELAY_BROKER_URL", "FNRELAY_TOKEN", "FNRELAY_ENDPOINT_ID",
           "FNRELAY_BROKER_DB")

RUN_A_FUNCTION = """
import os
import fnrelay

def double(x):
    return 2 * x

with fnrelay.Executor(os.environ["FNRELAY_ENDPOINT_ID"]) as ex:
    print(sum(ex.map(double, range(10), timeout=120)))
"""


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FNRELAY_")}


def fnrelay(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([FNRELAY, *args], capture_output=True, text=True, timeout=300,
                          env=env or clean_env())


def parse_exports(stdout: str) -> dict[str, str]:
    out = {}
    for line in stdout.splitlines():
        words = shlex.split(line)
        assert words[0] == "export", line
        key, _, value = words[1].partition("=")
        out[key] = value
    return out


@pytest.fixture
def stack_dir():
    base = make_shared_tmpdir("fnrelay-local-test-")
    path = base / "stack"
    yield path
    if (path / "state.json").exists():
        fnrelay("local", "down", "--dir", str(path))
    for pid in left_running(path):
        os.kill(pid, 9)
    shutil.rmtree(base, ignore_errors=True)


def test_local_up_run_status_down(stack_dir: Path):
    up = fnrelay("local", "up", "--dir", str(stack_dir))
    assert up.returncode == 0, up.stderr
    exports = parse_exports(up.stdout)
    assert sorted(exports) == sorted(EXPORTS)

    state = json.loads((stack_dir / "state.json").read_text())
    assert (stack_dir / "state.json").stat().st_mode & 0o077 == 0
    pids = [state["rabbitmq"]["pid"], state["broker"]["pid"], state["endpoint"]["pid"]]
    assert all(pid_alive(p) for p in pids)

    # the SDK needs nothing but the exported variables
    run = subprocess.run([sys.executable, "-c", RUN_A_FUNCTION], capture_output=True,
                         text=True, timeout=300, env={**clean_env(), **exports},
                         cwd=stack_dir.parent)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(2 * sum(range(10)))

    status = fnrelay("local", "status", "--dir", str(stack_dir))
    assert status.returncode == 0, status.stdout + status.stderr
    assert [line.split()[:2] for line in status.stdout.splitlines()] == [
        ["rabbitmq", "running"], ["broker", "running"], ["endpoint", "running"]]

    again = fnrelay("local", "up", "--dir", str(stack_dir))
    assert again.returncode == 0, again.stderr
    assert "already up" in again.stderr
    assert parse_exports(again.stdout) == exports

    down = fnrelay("local", "down", "--dir", str(stack_dir))
    assert down.returncode == 0, down.stderr
    assert not any(pid_alive(p) for p in pids)
    assert left_running(stack_dir) == []

    stopped = fnrelay("local", "status", "--dir", str(stack_dir))
    assert stopped.returncode == 1
    assert all(line.split()[1] == "stopped" for line in stopped.stdout.splitlines())


def test_local_down_without_a_stack_says_so(tmp_path: Path):
    down = fnrelay("local", "down", "--dir", str(tmp_path / "nothing"))
    assert down.returncode == 0
    assert "no local stack" in down.stderr


def test_local_up_after_down_runs_functions_again(stack_dir: Path):
    """`make demo` twice: the second stack's broker has a new port, and the kept endpoint (same
    id, same journal) must follow it."""
    first = fnrelay("local", "up", "--dir", str(stack_dir))
    assert first.returncode == 0, first.stderr
    assert fnrelay("local", "down", "--dir", str(stack_dir)).returncode == 0

    second = fnrelay("local", "up", "--dir", str(stack_dir))
    assert second.returncode == 0, second.stderr
    exports = parse_exports(second.stdout)
    assert exports["FNRELAY_ENDPOINT_ID"] == parse_exports(first.stdout)["FNRELAY_ENDPOINT_ID"]
    run = subprocess.run([sys.executable, "-c", RUN_A_FUNCTION], capture_output=True,
                         text=True, timeout=300, env={**clean_env(), **exports},
                         cwd=stack_dir.parent)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(2 * sum(range(10)))


def test_a_damaged_state_file_is_a_one_line_error_and_down_still_stops_everything(
        stack_dir: Path):
    up = fnrelay("local", "up", "--dir", str(stack_dir))
    assert up.returncode == 0, up.stderr
    path = stack_dir / "state.json"
    state = json.loads(path.read_text())
    pids = [state["rabbitmq"]["pid"], state["broker"]["pid"], state["endpoint"]["pid"]]
    del state["broker"]["pid"]  # a hand edit gone wrong
    path.write_text(json.dumps(state))

    status = fnrelay("local", "status", "--dir", str(stack_dir))
    assert status.returncode == 1
    assert "is damaged ('broker' has no int 'pid')" in status.stderr
    assert "fnrelay local down" in status.stderr and "Traceback" not in status.stderr

    down = fnrelay("local", "down", "--dir", str(stack_dir))
    assert down.returncode == 0, down.stderr
    assert "is damaged" in down.stderr and "Traceback" not in down.stderr
    assert not any(pid_alive(p) for p in pids)
    assert left_running(stack_dir) == []
    assert not path.exists()


#: Put first on PYTHONPATH, this makes the broker's and endpoint's dependencies unimportable,
#: as they are after `pip install fnrelay` without the extras (the packages' code is there).
SDK_ALONE = '''
import sys

class _NotInstalled:
    names = {"fastapi", "uvicorn", "sqlalchemy", "alembic", "psycopg", "jinja2", "jsonschema",
             "parsl", "globus_compute_common"}

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
'''


def test_local_up_with_the_sdk_alone_names_the_extra_and_starts_nothing(tmp_path: Path):
    (tmp_path / "sitecustomize.py").write_text(SDK_ALONE)
    env = clean_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    stack = tmp_path / "stack"
    up = fnrelay("local", "up", "--dir", str(stack), env=env)
    assert up.returncode == 1
    assert "Traceback" not in up.stderr and up.stderr.count("\n") == 1, up.stderr
    assert "pip install 'fnrelay[all]'" in up.stderr and "fastapi" in up.stderr
    assert not stack.exists() and left_running(stack) == []
