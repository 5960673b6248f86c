"""Conda environments: run a command in a named env (``-n``) or one at a path (``-p``).

`conda run` wraps a single command (it composes inside a launcher or a container, where an
activation would not survive); activation lines suit a script whose later lines need the env.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from fnrelay_wrappers.container import check_path
from fnrelay_wrappers.shell import Token

ENV_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}$")


def check_env_name(name: str) -> str:
    """`name` if it is a plain conda env name, else ValueError."""
    if not isinstance(name, str) or not ENV_NAME_PATTERN.fullmatch(name):
        raise ValueError(f"not a valid conda environment name: {name!r}")
    return name


@dataclass(frozen=True)
class CondaEnv:
    """Exactly one of `env` (a name) or `prefix` (an absolute path)."""

    env: str | None = None
    prefix: str | None = None
    executable: str = "conda"

    def __post_init__(self) -> None:
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
        """``conda run --no-capture-output -n ENV``: output streams as the command writes it."""
        return [self.executable, "run", "--no-capture-output", *self.selector()]

    def activation_lines(self) -> list[str]:
        """Shell lines that activate the env in the current bash."""
        target = self.selector()[1]
        return [
            f'eval "$({shlex.quote(self.executable)} shell.bash hook)"',
            f"conda activate {shlex.quote(target)}",
        ]
