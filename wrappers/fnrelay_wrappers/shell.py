"""Turning argv lists into shell text, with every value quoted.

Everything the wrappers produce passes through here, so quoting is decided in one place. A
token is either a literal string (single-quoted by `shlex.quote` when it needs it) or an
`EnvRef`, a reference to an environment variable that must expand when the line runs (e.g.
``$PBS_NODEFILE``, which only exists inside the job) and is written as ``"$NAME"``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class EnvRef:
    """A token that expands to an environment variable's value when the line runs."""

    name: str

    def __post_init__(self) -> None:
        check_env_name(self.name)

    def __str__(self) -> str:
        return f'"${self.name}"'


Token = str | EnvRef


def check_env_name(name: str) -> str:
    """`name` if it is a valid environment variable name, else ValueError."""
    if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
        raise ValueError(f"not a valid environment variable name: {name!r}")
    return name


def quote(token: Token) -> str:
    """Shell text for one token: quoted literal, or ``"$NAME"`` for an EnvRef."""
    if isinstance(token, EnvRef):
        return str(token)
    if not isinstance(token, str):
        raise TypeError(f"argv tokens must be str or EnvRef, not {type(token).__name__}")
    return shlex.quote(token)


def join(argv: Iterable[Token]) -> str:
    """One shell command line from argv tokens, each quoted."""
    return " ".join(quote(t) for t in argv)


def split_options(options: str | Iterable[str] | None) -> list[str]:
    """Admin-written launcher/container options as argv tokens.

    A string is split like a shell would (``"--nv --cleanenv"``); a list is taken token by
    token. Tokens are quoted again when joined, so options never expand variables or run
    commands: they are arguments, not shell text.
    """
    if options is None:
        return []
    if isinstance(options, str):
        return shlex.split(options)
    tokens = list(options)
    for t in tokens:
        if not isinstance(t, str):
            raise TypeError(f"option tokens must be strings, not {t!r}")
    return tokens


def export_line(name: str, value: str) -> str:
    """``export NAME='value'``."""
    return f"export {check_env_name(name)}={shlex.quote(str(value))}"


def export_lines(env: Mapping[str, str]) -> list[str]:
    """One export line per variable, in the mapping's order."""
    return [export_line(k, v) for k, v in env.items()]
