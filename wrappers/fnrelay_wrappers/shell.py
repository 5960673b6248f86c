"""Turning argv lists into shell text, with every value quoted.

Everything the wrappers produce passes through here, so quoting is decided in one place. A
token is either a literal string (single-quoted by `shlex.quote` when it needs it), an
`EnvRef`, a reference to an environment variable that must expand when the line runs (e.g.
``$PBS_NODEFILE``, which only exists inside the job) and is written as ``"$NAME"``, or a `Word`
that mixes the two (``--hostfile=$PBS_NODEFILE``). Config text becomes tokens through
`expand_refs`: ``$NAME`` and ``${NAME}`` expand, nothing else does (no command substitution,
globbing or word splitting), so an admin can point at the job's variables and still cannot
inject shell.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENV_REF = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True)
class EnvRef:
    """A token that expands to an environment variable's value when the line runs."""

    name: str

    def __post_init__(self) -> None:
        check_env_name(self.name)

    def __str__(self) -> str:
        return f'"${self.name}"'


@dataclass(frozen=True)
class Word:
    """One argument made of literal text and variable references, e.g. ``--x=$NODEFILE``."""

    parts: tuple[str | EnvRef, ...]

    def __str__(self) -> str:
        return "".join(f'"${{{p.name}}}"' if isinstance(p, EnvRef) else shlex.quote(p)
                       for p in self.parts if p != "")


Token = str | EnvRef | Word


def expand_refs(text: str) -> Token:
    """`text` as a token in which ``$NAME``/``${NAME}`` expand when the line runs."""
    if not isinstance(text, str):
        raise TypeError(f"option tokens must be strings, not {text!r}")
    parts: list[str | EnvRef] = []
    end = 0
    for m in _ENV_REF.finditer(text):
        parts += [text[end:m.start()], EnvRef(m.group(1) or m.group(2))]
        end = m.end()
    if not parts:
        return text
    parts.append(text[end:])
    refs = [p for p in parts if p != ""]
    return refs[0] if len(refs) == 1 else Word(tuple(parts))


def check_env_name(name: str) -> str:
    """`name` if it is a valid environment variable name, else ValueError."""
    if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
        raise ValueError(f"not a valid environment variable name: {name!r}")
    return name


def quote(token: Token) -> str:
    """Shell text for one token: quoted literal, ``"$NAME"`` for an EnvRef, or a Word."""
    if isinstance(token, (EnvRef, Word)):
        return str(token)
    if not isinstance(token, str):
        raise TypeError(f"argv tokens must be str or EnvRef, not {type(token).__name__}")
    return shlex.quote(token)


def join(argv: Iterable[Token]) -> str:
    """One shell command line from argv tokens, each quoted."""
    return " ".join(quote(t) for t in argv)


def split_options(options: str | Iterable[str] | None) -> list[str]:
    """Admin-written launcher/container options as literal argv strings.

    A string is split like a shell would (``"--nv --cleanenv"``); a list is taken token by
    token. `option_tokens` is what the wrappers use: it also expands ``$NAME``.
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


def option_tokens(options: str | Iterable[str] | None) -> list[Token]:
    """Options as argv tokens in which ``$NAME`` references expand when the job runs
    (``--hostfile $PBS_NODEFILE``); everything else stays one literal argument, so options
    never run commands."""
    return [expand_refs(t) for t in split_options(options)]


def export_line(name: str, value: str) -> str:
    """``export NAME='value'``."""
    return f"export {check_env_name(name)}={shlex.quote(str(value))}"


def export_lines(env: Mapping[str, str]) -> list[str]:
    """One export line per variable, in the mapping's order."""
    return [export_line(k, v) for k, v in env.items()]
