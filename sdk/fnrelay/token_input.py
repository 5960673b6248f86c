"""How `login` commands take a token without showing it to other local users.

A command line is world-readable (`ps`, /proc/PID/cmdline), so a token given there is seen by
every local account while the command runs. `--token -` (stdin), `--token-file` or the prompt
keep it off; `--token VALUE` still works for scripts, with a warning.
"""

from __future__ import annotations

import os
import stat
import sys

import click

STDIN = "-"
ON_COMMAND_LINE = ("Warning: a token on the command line is visible to every user of this "
                   "machine (ps); use --token - (stdin), --token-file FILE or the prompt")


def token_options(f):  # type: ignore[no-untyped-def]
    """--token and --token-file, the same for every login command."""
    f = click.option("--token-file", type=click.Path(dir_okay=False), default=None,
                     help="Read the token from this file (first line); it must be readable "
                          "by you alone (chmod 600), as ssh insists for keys.")(f)
    return click.option("--token", default=None, metavar="TOKEN|-",
                        help="The token; '-' reads it from stdin. Without --token or "
                             "--token-file it is asked for, unechoed. A value here is "
                             "visible to other local users (ps): prefer '-' or a file.")(f)


def given_token(token: str | None, token_file: str | None) -> str | None:
    """The token from --token or --token-file; None if neither was given (ask for it)."""
    if token is not None and token_file is not None:
        raise click.UsageError("give --token or --token-file, not both")
    if token_file is not None:
        return _from_file(token_file)
    if token == STDIN:
        return _nonempty(sys.stdin.readline(), "stdin")
    if token is not None:
        click.echo(ON_COMMAND_LINE, err=True)
    return token


def asked_token() -> str:
    """The token typed at an unechoed prompt (or the first line of stdin if it is no tty)."""
    return _nonempty(click.prompt("Broker token", hide_input=True), "the prompt")


def _nonempty(text: str, where: str) -> str:
    token = text.strip()
    if not token:
        raise click.UsageError(f"no token on {where}")
    return token


def _from_file(path: str) -> str:
    """The first line of `path`, refused when group or others may read or change it: a
    token there is as exposed as on the command line, and silence would hide it."""
    try:
        with open(path, encoding="utf-8") as f:
            mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
            first = f.readline()
    except (OSError, UnicodeDecodeError) as e:
        raise click.BadParameter(f"cannot read {path}: {getattr(e, 'strerror', e)}",
                                 param_hint="--token-file") from None
    if mode & 0o077:
        raise click.BadParameter(f"{path} is accessible to other users (mode {mode:04o}): "
                                 f"chmod 600 {path}", param_hint="--token-file")
    return _nonempty(first, path)
