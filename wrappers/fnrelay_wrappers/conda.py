"""Conda environments: run a command in a named env (``-n``) or one at a path (``-p``).

A job activates its env once, in its set-up, so every later line (the worker, ``srun``'s ranks,
a shell function) runs in it and the env's ``python3`` is the one found on PATH. Inside a
container the host's activation does not reach, so there ``<tool> run`` wraps the command.
Sites without conda use micromamba, whose command line differs (``shell hook --shell bash``,
no ``--no-capture-output``): `tool` picks one.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from fnrelay_wrappers.container import check_path
from fnrelay_wrappers.shell import Token

ENV_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}$")
TOOLS = ("conda", "micromamba")


def check_env_name(name: str) -> str:
    """`name` if it is a plain conda env name, else ValueError."""
    if not isinstance(name, str) or not ENV_NAME_PATTERN.fullmatch(name):
        raise ValueError(f"not a valid conda environment name: {name!r}")
    return name


@dataclass(frozen=True)
class CondaEnv:
    """Exactly one of `env` (a name) or `prefix` (an absolute path); `tool` runs it."""

    env: str | None = None
    prefix: str | None = None
    tool: str = "conda"

    def __post_init__(self) -> None:
        if self.tool not in TOOLS:
            raise ValueError(f"conda tool must be one of {', '.join(TOOLS)}, not {self.tool!r}")
        if self.env is not None and self.prefix is None:
            check_env_name(self.env)
        elif self.prefix is not None and self.env is None:
            check_path(self.prefix)
        else:
            raise ValueError("a conda environment needs exactly one of 'env' or 'prefix'")

    def selector(self) -> list[str]:
        if self.env is not None:
            return ["-n", self.env]
        assert self.prefix is not None  # __post_init__: exactly one of the two is set
        return ["-p", self.prefix]

    def run_argv(self) -> list[Token]:
        """``conda run --no-capture-output -n ENV`` (output streams as the command writes it;
        micromamba never captures it and has no such flag)."""
        if self.tool == "micromamba":
            return ["micromamba", "run", *self.selector()]
        return ["conda", "run", "--no-capture-output", *self.selector()]

    def activation_lines(self) -> list[str]:
        """Shell lines that activate the env in the current bash (the hook defines the
        `conda`/`micromamba` shell function that `activate` needs)."""
        hook = "shell.bash hook" if self.tool == "conda" else "shell hook --shell bash"
        return [
            f'eval "$({self.tool} {hook})"',
            f"{self.tool} activate {shlex.quote(self.selector()[1])}",
        ]
