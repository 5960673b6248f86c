"""Quoting: every value that reaches a shell comes out as one literal word."""

from __future__ import annotations

import subprocess

import pytest

from fnrelay_wrappers.shell import (
    EnvRef,
    export_line,
    join,
    option_tokens,
    quote,
    split_options,
)

ODD = ["a b", "it's", "$(id)", "`id`", "x;y", "new\nline", "*", "", "-n", "ü", '"q"', "a\\b"]


def echo_args(line: str, env: dict | None = None) -> list[str]:
    """What bash passes to a program for `line` (one argument per output record)."""
    out = subprocess.run(["bash", "-c", f"printf '%s\\0' {line}"], capture_output=True,
                         check=True, env=env)
    return out.stdout.decode().split("\0")[:-1]


def test_join_quotes_each_token_to_one_argument():
    assert echo_args(join(ODD)) == ODD


def test_envref_expands_at_run_time():
    line = join(["--hostfile", EnvRef("NODEFILE")])
    assert line == '--hostfile "$NODEFILE"'
    assert echo_args(line, {"NODEFILE": "/tmp/a b", "PATH": "/usr/bin:/bin"}) == \
        ["--hostfile", "/tmp/a b"]


@pytest.mark.parametrize("name", ["1X", "A-B", "A B", "$(id)", ""])
def test_envref_and_export_refuse_bad_names(name):
    with pytest.raises(ValueError):
        EnvRef(name)
    with pytest.raises(ValueError):
        export_line(name, "x")


def test_export_line_round_trips_odd_value():
    value = "srun -n 2 'a b' $(id)"
    out = subprocess.run(["bash", "-c", export_line("V", value) + '; printf %s "$V"'],
                         capture_output=True, text=True, check=True)
    assert out.stdout == value


def test_quote_refuses_non_strings():
    with pytest.raises(TypeError):
        quote(3)


def test_split_options_string_and_list():
    assert split_options("--nv  --env 'A=b c'") == ["--nv", "--env", "A=b c"]
    assert split_options(["--env", "A=b c"]) == ["--env", "A=b c"]
    assert split_options(None) == []
    # options are arguments, not shell: a command substitution stays literal
    assert echo_args(join(split_options("--x=$(id)"))) == ["--x=$(id)"]


def test_config_text_may_reference_the_jobs_variables_and_nothing_else():
    env = {"PBS_NODEFILE": "/var/spool/a b", "PATH": "/usr/bin:/bin"}
    tokens = option_tokens("--hostfile $PBS_NODEFILE --env=${PBS_NODEFILE}:x $(id) 'a $5'")
    assert echo_args(join(tokens), env) == \
        ["--hostfile", "/var/spool/a b", "--env=/var/spool/a b:x", "$(id)", "a $5"]
    assert tokens[1] == EnvRef("PBS_NODEFILE")
