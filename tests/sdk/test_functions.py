"""ShellFunction and MPIFunction: formatting (as Globus Compute, quoting one keyword away),
output tails and files, walltimes, ShellResult as Globus Compute shows it."""

from __future__ import annotations

import os
import time

import pytest

from fnrelay import MPIFunction, ShellFunction, ShellResult
from fnrelay.errors import MPILaunchError
from fnrelay.functions import TIMEOUT_RETURNCODE, parse_walltime
from fnrelay.processes import pid_alive


def test_runs_bash_and_returns_a_shell_result():
    result = ShellFunction("echo out; echo err >&2; exit 3")()
    assert isinstance(result, ShellResult)
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert result.cmd == "echo out; echo err >&2; exit 3"


def test_values_are_inserted_as_written_as_in_globus_compute():
    result = ShellFunction("printf '%s|' {flags} {b:03d}")(flags="-d -a", b=7)
    assert result.stdout == "-d|-a|007|"
    assert result.cmd == "printf '%s|' -d -a 007"


def test_quote_values_makes_each_value_one_word(tmp_path):
    marker = tmp_path / "injected"
    fn = ShellFunction("printf '%s|' {a} {b:03d}", quote_values=True)
    result = fn(a=f"two words; touch {marker}", b=7)
    assert result.stdout == f"two words; touch {marker}|007|"
    assert not marker.exists()


def test_missing_kwarg_is_a_clear_error():
    with pytest.raises(ValueError, match="needs keyword argument 'name'"):
        ShellFunction("echo {name}")()


def test_output_is_cut_to_the_last_snippet_lines():
    result = ShellFunction("seq 1 5000; seq 1 10 >&2", snippet_lines=3)()
    assert result.stdout == "4998\n4999\n5000\n"
    assert result.stderr == "8\n9\n10\n"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, None), (5, 5), ("00:00:07", 7), ("01:02:03", 3723), ("48:00:00", 172800)],
)
def test_walltime_parsing(value, seconds):
    assert parse_walltime(value) == seconds


@pytest.mark.parametrize("value", [0, -1, True, 0.0, -0.5, float("nan"), float("inf"), "90",
                                   "1:60:00", "00:00:00", "a:b:c", "1h"])
def test_bad_walltimes_are_refused_clearly(value):
    with pytest.raises(ValueError, match="walltime"):
        ShellFunction("true", walltime=value)


def test_walltime_kills_the_command_and_its_children(tmp_path):
    pidfile = tmp_path / "pid"
    fn = ShellFunction(f"sleep 300 & echo $! > {pidfile}; echo started; wait", walltime=1.5)
    result = fn()
    assert result.returncode == TIMEOUT_RETURNCODE
    assert result.exception_name == "subprocess.TimeoutExpired"
    assert "walltime" in result.stderr
    assert result.stdout == "started\n"
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(child)


def test_mpi_function_uses_the_prefix_from_the_environment(monkeypatch):
    monkeypatch.setenv("FNRELAY_MPI_PREFIX", "echo LAUNCH")
    result = MPIFunction("hostname --version {x}", quote_values=True)(x="a b")
    assert result.stdout == "LAUNCH hostname --version a b\n"
    assert result.cmd == "echo LAUNCH hostname --version 'a b'"


def test_mpi_function_defaults_to_mpiexec_with_num_ranks(monkeypatch):
    monkeypatch.delenv("FNRELAY_MPI_PREFIX", raising=False)
    monkeypatch.setenv("FNRELAY_NUM_RANKS", "4")
    assert MPIFunction("./a.out").format_command() == "mpiexec -n 4 ./a.out"
    monkeypatch.delenv("FNRELAY_NUM_RANKS")
    assert MPIFunction("./a.out").format_command() == "mpiexec -n 1 ./a.out"


def test_runs_in_the_callers_process_group():
    result = ShellFunction("ps -o pgid= -p $$")()
    assert int(result.stdout) == os.getpgrp()


def test_globus_compute_keywords_name_and_return_dict():
    fn = ShellFunction("echo hi; exit 2", None, None, 30.0, 1000, "say_hi", True)
    assert fn.__name__ == "say_hi"
    assert fn() == {"cmd": "echo hi; exit 2", "stdout": "hi\n", "stderr": "", "returncode": 2,
                    "exception_name": "subprocess.CalledProcessError"}
    with pytest.raises(ValueError, match="name"):
        ShellFunction("true", name="not a name")
    with pytest.raises(ValueError, match="name"):
        ShellFunction("true", name="class")


def test_stdout_and_stderr_files_are_appended_to_and_the_snippet_is_their_tail(tmp_path):
    out, err = tmp_path / "logs" / "out.txt", tmp_path / "err.txt"
    fn = ShellFunction("echo run-{n}; echo warn-{n} >&2", stdout=str(out), stderr=str(err),
                       snippet_lines=2)
    fn(n=1)
    result = fn(n=2)
    assert out.read_text() == "run-1\nrun-2\n" and err.read_text() == "warn-1\nwarn-2\n"
    assert (result.stdout, result.stderr) == ("run-1\nrun-2\n", "warn-1\nwarn-2\n")
    assert fn(n=3).stdout == "run-2\nrun-3\n"


def test_shell_result_fields_and_str_are_those_of_globus_compute():
    ok = ShellResult("echo hi", "hi\n", "", 0)
    assert (ok.cmd, ok.stdout, ok.stderr, ok.returncode, ok.exception_name) == (
        "echo hi", "hi\n", "", 0, None)
    assert str(ok) == "exit code: 0\n   stdout:\nhi"
    failed = ShellFunction("seq 1 12; echo oops >&2; exit 1")()
    assert str(failed) == (
        "exit code: 1\n   stdout:\n[... truncated; see .stdout for full output ...]\n"
        + "\n".join(str(i) for i in range(3, 13))
        + "\n\n   stderr:\noops\n\nexception: subprocess.CalledProcessError")


def test_an_mpi_launcher_that_starts_no_rank_raises_its_own_error(monkeypatch):
    """OpenMPI refusing root used to come back as returncode 1 with an empty stdout (a blank
    line where the README prints it); the launcher's refusal is now an error, named."""
    for name in ("OMPI_ALLOW_RUN_AS_ROOT", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FNRELAY_MPI_PREFIX", "mpiexec -n 1")
    if os.geteuid() == 0:
        with pytest.raises(MPILaunchError, match="OMPI_ALLOW_RUN_AS_ROOT=1.*run as root"):
            MPIFunction("echo rank")()
    monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT", "1")
    monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    monkeypatch.setenv("FNRELAY_MPI_PREFIX", f"mpiexec -n {(os.cpu_count() or 1) + 1}")
    with pytest.raises(MPILaunchError, match="--oversubscribe.*not enough slots"):
        MPIFunction("echo rank")()
    monkeypatch.setenv("FNRELAY_MPI_PREFIX", "no-such-mpirun -n 2")
    with pytest.raises(MPILaunchError, match="'no-such-mpirun' is not installed"):
        MPIFunction("echo rank")()


def test_an_mpi_program_that_fails_is_its_own_result(monkeypatch):
    """The program's exit status is a ShellResult, as in Globus Compute: not an error."""
    monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT", "1")
    monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    monkeypatch.setenv("FNRELAY_MPI_PREFIX", "mpiexec -n 2")
    result = MPIFunction("bash -c 'echo oops >&2; exit 3'")()
    assert (result.returncode, result.exception_name) == (3, "subprocess.CalledProcessError")
    assert "oops" in result.stderr
