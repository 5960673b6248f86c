"""The ``fnrelay`` command: log in to a broker and look at tasks and endpoints.

Every fnrelay error becomes a one-line message and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import uuid
from typing import TYPE_CHECKING, Any

import click

from fnrelay import errors, task_report, token_input
from fnrelay.config import save_credentials

if TYPE_CHECKING:  # annotations only: `_client` imports it when a command needs it
    from fnrelay.client import Client

CLI_RETRIES = 2  # a CLI user would rather see "cannot reach" quickly than wait for backoff


class _Group(click.Group):
    """A click group that prints fnrelay errors as one line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except errors.FnRelayError as e:
            click.echo(f"Error: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                       err=True)
            sys.exit(1)


def _client(broker_url: str | None = None, token: str | None = None) -> Client:
    from fnrelay.client import Client

    client = Client(broker_url=broker_url, token=token)
    client.retry_config.max_retries = CLI_RETRIES
    return client


def _time(t: float | None) -> str:
    if t is None:
        return "-"
    return dt.datetime.fromtimestamp(t).isoformat(sep=" ", timespec="milliseconds")


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]
    return "\n".join(lines)


@click.group(cls=_Group)
@click.version_option(package_name="fnrelay")
def main() -> None:
    """fnrelay: run functions on your own endpoints through an fnrelay broker."""


@main.command()
@click.option("--broker-url", required=True, help="Base URL of the broker, e.g. http://host:8080")
@token_input.token_options
def login(broker_url: str, token: str | None, token_file: str | None) -> None:
    """Check a token (from `fnrelay-broker user add`) against the broker and save it for
    later commands and the SDK."""
    token = token_input.given_token(token, token_file) or token_input.asked_token()
    who = _client(broker_url, token).whoami()
    path = save_credentials(broker_url, token)
    click.echo(f"Logged in to {broker_url.rstrip('/')} as {who['username']} "
               f"(credentials in {path})")


@main.command()
def whoami() -> None:
    """Show who the saved or configured token belongs to."""
    client = _client()
    who = client.whoami()
    click.echo(f"{who['username']} ({who['user_id']}) at {client.broker_url}")


@main.group(cls=_Group)
def task() -> None:
    """Inspect tasks."""


@task.command("show")
@click.argument("task_id")
def task_show(task_id: str) -> None:
    """A task's status and history, its result or error, return code and output tail."""
    client = _client()
    record = client.task_record(task_id)
    click.echo(f"task      {record['task_id']}")
    click.echo(f"status    {record['status']}")
    click.echo(f"endpoint  {record.get('endpoint_id')}")
    click.echo(f"function  {record.get('function_id')}")
    for line in task_report.outcome_lines(record, client):
        click.echo(line)
    rows = [[_time(h.get("time")), h.get("status", ""), h.get("detail") or ""]
            for h in record.get("history", [])]
    click.echo("")
    click.echo(_table(rows, ["time", "status", "detail"]))


@task.command("list")
@click.option("--state", "states", multiple=True, type=click.Choice(task_report.STATES),
              help="Only tasks in this state (repeatable).")
@click.option("--endpoint", default=None, help="Only tasks sent to this endpoint (id or name).")
@click.option("--function", "function_id", default=None, help="Only tasks of this function id.")
@click.option("--since", default=None, metavar="WHEN",
              help="Submitted at or after WHEN: an ISO date/time or an age such as 30m, 2h, 1d.")
@click.option("--until", default=None, metavar="WHEN", help="Submitted before WHEN (as --since).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, None),
              help="At most this many tasks, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print the tasks as JSON.")
def task_list(states: tuple[str, ...], endpoint: str | None, function_id: str | None,
              since: str | None, until: str | None, limit: int, as_json: bool) -> None:
    """List your tasks, newest first (never another user's)."""
    client = _client()
    try:
        tasks = client.list_tasks(
            list(states) or None, endpoint_id=_endpoint_id(client, endpoint),
            function_id=function_id, since=task_report.parse_when(since, "--since"),
            until=task_report.parse_when(until, "--until"), limit=limit)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    if as_json:
        click.echo(json.dumps(tasks, indent=2))
        return
    if not tasks:
        click.echo("no tasks match", err=True)
        return
    rows = [[t["task_id"], t["status"], _time(t.get("created")), _time(t.get("completed")),
             t["endpoint_id"], t["function_id"]] for t in tasks]
    click.echo(_table(rows, ["task", "status", "submitted", "finished", "endpoint",
                             "function"]))


def _endpoint_id(client: Client, endpoint: str | None) -> str | None:
    """An endpoint given by id, or by the name of one of the user's endpoints."""
    if endpoint is None:
        return None
    names = {e["name"]: e["endpoint_id"] for e in client.get_endpoints()}
    if endpoint in names:
        return names[endpoint]
    try:
        return str(uuid.UUID(endpoint))
    except ValueError:
        raise click.UsageError(f"--endpoint: {endpoint!r} is neither the name of one of your "
                               "endpoints nor an endpoint id") from None


@main.command()
def endpoints() -> None:
    """List your endpoints and whether they are online."""
    rows = [[e["name"], e["endpoint_id"], e["status"], _time(e.get("last_heartbeat"))]
            for e in _client().get_endpoints()]
    if not rows:
        click.echo("no endpoints yet: configure one with `fnrelay-endpoint configure NAME`")
        return
    click.echo(_table(rows, ["name", "id", "status", "last heartbeat"]))


@main.command("gc-proxy", epilog="""\b
Then, for the official SDK:
  export GLOBUS_SDK_ENVIRONMENT=local
  export GLOBUS_SDK_SERVICE_URL_AUTH=http://localhost:5000/
  export GLOBUS_COMPUTE_CLIENT_ID=... GLOBUS_COMPUTE_CLIENT_SECRET=...

Loopback only, by design: the plain-HTTP side carries your tokens and client
secret, which must not cross a network in clear, and the proxy adds no login of
its own, so only programs on this machine may reach it.""")
@click.option("--broker-url", default=None,
              help="The broker (https://...); default: FNRELAY_BROKER_URL or `fnrelay login`'s.")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535),
              help="Port on 127.0.0.1; the official SDK reaches only 5000.")
@click.option("--ca-bundle", default=None, type=click.Path(exists=True, dir_okay=False),
              help="PEM file of the CA that signed the broker's certificate; default: "
                   "FNRELAY_CA_BUNDLE, else the system's CAs.")
def gc_proxy(broker_url: str | None, port: int, ca_bundle: str | None) -> None:
    """Let the official Globus Compute SDK reach your broker: listen on http://127.0.0.1:5000
    (the only address GLOBUS_SDK_ENVIRONMENT=local reaches) and forward every request to the
    broker over TLS."""
    from fnrelay.config import resolve_broker_url
    from fnrelay.gcproxy import serve

    serve(resolve_broker_url(broker_url), port, ca_bundle)


try:
    from fnrelay.devstack.cli import local_cli
except ModuleNotFoundError as e:  # the local stack is optional; its own bugs are not hidden
    if e.name not in ("fnrelay.devstack", "fnrelay.devstack.cli"):
        raise
else:
    main.add_command(local_cli, "local")
