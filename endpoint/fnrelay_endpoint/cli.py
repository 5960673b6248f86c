"""`fnrelay-endpoint`: configure, start, stop, list, inspect and delete endpoints."""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable
from typing import Any

import click

from fnrelay import logformat
from fnrelay.errors import FnRelayError
from fnrelay_endpoint import daemon
from fnrelay_endpoint.broker_api import BrokerAPI
from fnrelay_endpoint.config import model as cfg


def _friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Users get one clear line and exit status 1, never a traceback, for known errors."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FnRelayError as e:
            raise click.ClickException(str(e)) from e

    return wrapper


@click.group()
def main() -> None:
    """Run fnrelay endpoints: agents that pull tasks from a broker and run them here."""


@main.command()
@click.argument("name")
@click.option("--broker-url", help="Broker URL (default: FNRELAY_BROKER_URL or `fnrelay login`).")
@click.option("--max-workers", type=click.IntRange(min=1), help="Worker processes (default: CPUs).")
@click.option("--force", is_flag=True, help="Overwrite an existing config (the id is kept).")
@click.option("--multi-user", is_flag=True,
              help="A manager that starts a child endpoint per user and user_endpoint_config.")
@_friendly
def configure(name: str, broker_url: str | None, max_workers: int | None, force: bool,
              multi_user: bool) -> None:
    """Create endpoint NAME's directory and a commented config.yaml."""
    # Here, not at the top: it loads the multi-user templating (Jinja2, jsonschema), which
    # every other command, and the local engine's forkserver preloading this module, can skip.
    from fnrelay_endpoint.config import scaffold

    if multi_user:
        paths, endpoint_id = scaffold.configure_multi_user(name, broker_url, force)
        click.echo(f"configured multi-user endpoint {name} ({_id_note(endpoint_id)})")
        click.echo(f"config: {paths.config}")
        click.echo(f"edit also: {paths.dir}/user_config_template.yaml.j2, "
                   "user_config_schema.json, identity_mapping.yaml")
        click.echo(f"start it with: fnrelay-endpoint start {name}")
        return
    paths, endpoint_id = scaffold.configure(name, broker_url, max_workers, force)
    click.echo(f"configured endpoint {name} ({_id_note(endpoint_id)})")
    click.echo(f"config: {paths.config}")
    click.echo(f"start it with: fnrelay-endpoint start {name}")


def _id_note(endpoint_id: str | None) -> str:
    return endpoint_id or "no id yet: the broker gives it one at the first start"


@main.command()
@click.argument("name")
@click.option("--foreground", is_flag=True, help="Run in this process (logs to endpoint.log).")
@click.option("--log-format", type=click.Choice(logformat.FORMATS, case_sensitive=False),
              default=None,
              envvar=logformat.ENV_LOG_FORMAT, show_envvar=True,
              help="endpoint.log as text (default) or JSON lines with task and endpoint ids "
                   "(also for a multi-user endpoint's children).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"],
                                               case_sensitive=False), default=None,
              envvar=daemon.ENV_LOG_LEVEL, show_envvar=True,
              help="Least level logged (default: info; debug logs each task's steps).")
@_friendly
def start(name: str, foreground: bool, log_format: str | None = None,
          log_level: str | None = None) -> None:
    """Start endpoint NAME (in the background unless --foreground)."""
    # In the environment: the background agent and a manager's children read them there.
    if log_format:
        os.environ[logformat.ENV_LOG_FORMAT] = log_format
    if log_level:
        os.environ[daemon.ENV_LOG_LEVEL] = log_level
    if cfg.is_multi_user(cfg.EndpointPaths.of(name).config):
        from fnrelay_endpoint.multiuser import manager

        if foreground:
            manager.run_foreground(name)
            return
        pid = manager.start_background(name, report=_to_terminal)
        click.echo(f"multi-user endpoint {name} ({cfg.EndpointPaths.of(name).endpoint_id()}) "
                   f"is running, pid {pid}")
        return
    if foreground:
        daemon.run_foreground(name)
        return
    pid = daemon.start_background(name, report=_to_terminal)
    endpoint_id = cfg.EndpointPaths.of(name).endpoint_id()
    click.echo(f"endpoint {name} ({endpoint_id}) is running, pid {pid}")


def _to_terminal(line: str) -> None:
    """A line of the endpoint's log that the one starting it should see now (stderr)."""
    click.echo(line, err=True)


@main.command()
@click.argument("name")
@_friendly
def stop(name: str) -> None:
    """Stop endpoint NAME; unfinished tasks run again at its next start."""
    pid = daemon.stop(name)
    click.echo(f"endpoint {name} stopped (pid {pid})" if pid else f"endpoint {name} is not running")


@main.command("list")
@_friendly
def list_endpoints() -> None:
    """List the endpoints configured under FNRELAY_HOME."""
    root = cfg.endpoints_dir()
    rows = []
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        paths = cfg.EndpointPaths(d.name, d)
        if not paths.exists():
            continue
        try:
            endpoint_id = paths.endpoint_id()
        except FnRelayError:
            endpoint_id = "?"
        rows.append((d.name, endpoint_id, "running" if daemon.running_pid(paths) else "stopped"))
    if not rows:
        click.echo(f"no endpoints in {root}; create one with `fnrelay-endpoint configure NAME`")
        return
    width = max(len(r[0]) for r in rows + [("NAME", "", "")])
    click.echo(f"{'NAME':<{width}}  {'ENDPOINT ID':<36}  STATUS")
    for name, endpoint_id, status in rows:
        click.echo(f"{name:<{width}}  {endpoint_id:<36}  {status}")


@main.command()
@click.argument("name")
@_friendly
def status(name: str) -> None:
    """Show endpoint NAME: local process and what the broker sees."""
    paths = cfg.EndpointPaths.of(name).require()
    config = cfg.load_any(paths.config)
    endpoint_id = paths.endpoint_id()
    pid = daemon.running_pid(paths)
    click.echo(f"name:        {name}")
    click.echo(f"endpoint id: {endpoint_id}")
    click.echo(f"local:       {f'running (pid {pid})' if pid else 'stopped'}")
    click.echo(f"broker:      {config.broker_url}")
    try:
        answer = _broker(config).endpoint_status(endpoint_id)
        click.echo(f"broker says: {answer.get('status')}")
    except FnRelayError as e:
        click.echo(f"broker says: unknown ({e})")
    click.echo(f"directory:   {paths.dir}")
    if isinstance(config, cfg.ManagerConfig):
        _print_children(paths)


def _print_children(paths: cfg.EndpointPaths) -> None:
    """The children table of a multi-user endpoint (from the state its manager saved)."""
    import time

    from fnrelay_endpoint.multiuser.manager import read_state

    rows = read_state(paths)
    click.echo(f"children:    {len(rows)}")
    if not rows:
        return

    def when(t: float | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"

    table = [("USER", "ACCOUNT", "CONFIG", "STATE", "STARTED", "LAST TASK", "CHILD ID")]
    table += [(r["user"], r["account"] or "-", r["config_hash"], r["state"], when(r["started"]),
               when(r["last_task"]), r["child_id"]) for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(table[0]))]
    for row in table:
        click.echo("  ".join(f"{str(v):<{w}}" for v, w in zip(row, widths, strict=True)).rstrip())
    for r in rows:
        if r.get("error"):
            click.echo(f"error of {r['child_id']}: {r['error']}")


@main.command("render-user-config")
@click.argument("name")
@click.option("--user-config", "user_config", required=True,
              help="The user_endpoint_config, as JSON.")
@click.option("--user", help="Broker username (default: your local account name).")
@_friendly
def render_user_config(name: str, user_config: str, user: str | None) -> None:
    """Print the config a child of multi-user endpoint NAME would get."""
    import json

    from fnrelay_endpoint.multiuser.manager import render_for

    try:
        value = json.loads(user_config)
    except ValueError as e:
        raise click.BadParameter(f"not JSON: {e}", param_hint="--user-config") from None
    click.echo(render_for(name, value, user), nl=False)


@main.command()
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_friendly
def delete(name: str, yes: bool) -> None:
    """Stop endpoint NAME, delete it at the broker and remove its directory."""
    paths = cfg.EndpointPaths.of(name).require()
    config = cfg.load_any(paths.config)
    endpoint_id = paths.endpoint_id()
    if not yes:
        click.confirm(f"delete endpoint {name} ({endpoint_id}) and its unfinished tasks?",
                      abort=True)
    daemon.stop(name)
    known = _broker(config).delete_endpoint(endpoint_id)
    shutil.rmtree(paths.dir)
    gone = "" if known else " (the broker did not know it)"
    click.echo(f"deleted endpoint {name} ({endpoint_id}){gone}")


def _broker(config: cfg.EndpointConfig | cfg.ManagerConfig) -> BrokerAPI:
    """The broker's REST API with the endpoint owner's token."""
    return BrokerAPI(config.broker_url, config.resolved_token())


if __name__ == "__main__":
    main()
