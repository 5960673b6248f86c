"""`fnrelay local up|down|status`: the local stack from the command line.

`fnrelay.cli` adds this group as `fnrelay local`; progress goes to stderr so that stdout holds
only the `export` lines of `up`, for `eval "$(fnrelay local up)"`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from fnrelay.devstack.stack import LocalStack, exports
from fnrelay.errors import FnRelayError


def _progress(message: str) -> None:
    click.echo(message, err=True)


def _run(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except FnRelayError as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        raise click.Abort() from None


_dir_option = click.option(
    "--dir", "dir_", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Where the stack keeps its data (default: the stack whose home $FNRELAY_HOME is, as "
         "`eval \"$(fnrelay local up)\"` sets it, else $FNRELAY_HOME/local or ~/.fnrelay/local).")


@click.group("local")
def local_cli() -> None:
    """An all-in-one stack on this machine: RabbitMQ, a broker and one endpoint."""


@local_cli.command("up")
@_dir_option
@click.option("--rabbitmq-nodes", default=1, show_default=True, type=click.IntRange(1, 9),
              metavar="N", help="Run RabbitMQ as a cluster of N nodes on this host, with "
              "quorum queues (3: what production runs; about 430 MB and 15 s to form).")
def up_cmd(dir_: Path | None, rabbitmq_nodes: int = 1) -> None:
    """Start the stack and print `export` lines for it (eval "$(fnrelay local up)")."""
    state = _run(lambda: LocalStack(dir_, log=_progress).up(rabbitmq_nodes))
    click.echo(exports(state), nl=False)
    if sys.stdout.isatty():  # printed, not evaluated: the shell is not pointed at the stack
        _progress('to point this shell at the stack, run: eval "$(fnrelay local up)"')


@local_cli.command("down")
@_dir_option
def down_cmd(dir_: Path | None) -> None:
    """Stop everything the stack started, and every endpoint under its home."""
    _run(LocalStack(dir_, log=_progress).down)


@local_cli.command("status")
@_dir_option
def status_cmd(dir_: Path | None) -> None:
    """Show whether each part runs, and every further endpoint under the stack's home;
    exits 1 unless all parts of the stack itself run."""
    stack = LocalStack(dir_)
    status = _run(stack.status)
    for name, info in status.items():
        _echo_part(name, info)
    for name, info in _run(stack.other_endpoints).items():  # they do not decide the exit code
        _echo_part("endpoint", {"running": info["running"], "name": name, **info})
    if not all(info["running"] for info in status.values()):
        sys.exit(1)


def _echo_part(name: str, info: dict) -> None:
    extra = "  ".join(f"{k}={v}" for k, v in info.items() if k != "running" and v)
    click.echo(f"{name:9} {'running' if info['running'] else 'stopped':8} {extra}".rstrip())
