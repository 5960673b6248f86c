"""ShellFunction and MPIFunction: formatting, quoting, output tails, walltimes."""

from __future__ import annotations

import os
import time

import pytest

from fnrelay import MPIFunction, ShellFunction, ShellResult
from fnrelay.functions import TIMEOUT_RETURNCODE, parse_walltime
from fnrelay.processes import pid_alive


def test_runs_bash_and_returns_a_shell_result():
    result = ShellFunction("echo out; echo err >&2; exit 3")()
    assert isinstance(result, ShellResult)
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert result.cmd == "echo out; echo err >&2; exit 3"


def test_kwargs_are_formatted_and_shell_quoted():
    fn = ShellFunction("printf '%s|' {a} {b:03d}")
    result = fn(a="two words; rm -rf /", b=7)
    assert result.stdout == "two words; rm -rf /|007|"


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


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "90", "1:60:00", "00:00:00", "a:b:c", "1h"])
def test_bad_walltimes_are_refused_clearly(value):
    with pytest.raises(ValueError, match="walltime"):
        ShellFunction("true", walltime=value)


def test_walltime_kills_the_command_and_its_children(tmp_path):
    pidfile = tmp_path / "pid"
    fn = ShellFunction(f"sleep 300 & echo $! > {pidfile}; echo started; wait", walltime=1)
    result = fn()
    assert result.returncode == TIMEOUT_RETURNCODE
    assert "walltime" in result.stderr
    assert result.stdout == "started\n"
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(child)


def test_mpi_function_uses_the_prefix_from_the_environment(monkeypatch):
    monkeypatch.setenv("FNRELAY_MPI_PREFIX", "echo LAUNCH")
    result = MPIFunction("hostname --version {x}")(x="a b")
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
