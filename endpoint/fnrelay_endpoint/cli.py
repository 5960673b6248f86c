"""`fnrelay-endpoint`: configure, start, stop, list, inspect and delete endpoints."""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable
from typing import Any

import click
import requests

from fnrelay.errors import BrokerUnavailableError, FnRelayError
from fnrelay_endpoint import config as cfg
from fnrelay_endpoint import daemon


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
@_friendly
def configure(name: str, broker_url: str | None, max_workers: int | None, force: bool) -> None:
    """Create endpoint NAME's directory and a commented config.yaml."""
    paths, endpoint_id = cfg.configure(name, broker_url, max_workers, force)
    click.echo(f"configured endpoint {name} ({endpoint_id})")
    click.echo(f"config: {paths.config}")
    click.echo(f"start it with: fnrelay-endpoint start {name}")


@main.command()
@click.argument("name")
@click.option("--foreground", is_flag=True, help="Run in this process (logs to endpoint.log).")
@_friendly
def start(name: str, foreground: bool) -> None:
    """Start endpoint NAME (in the background unless --foreground)."""
    if foreground:
        daemon.run_foreground(name)
        return
    pid = daemon.start_background(name)
    endpoint_id = cfg.EndpointPaths.of(name).endpoint_id()
    click.echo(f"endpoint {name} ({endpoint_id}) is running, pid {pid}")


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
    config = cfg.EndpointConfig.load(paths.config)
    endpoint_id = paths.endpoint_id()
    pid = daemon.running_pid(paths)
    click.echo(f"name:        {name}")
    click.echo(f"endpoint id: {endpoint_id}")
    click.echo(f"local:       {f'running (pid {pid})' if pid else 'stopped'}")
    click.echo(f"broker:      {config.broker_url}")
    try:
        answer = _broker_request("GET", config, f"/v1/endpoints/{endpoint_id}/status")
        click.echo(f"broker says: {answer.json().get('status')}")
    except FnRelayError as e:
        click.echo(f"broker says: unknown ({e})")
    click.echo(f"directory:   {paths.dir}")


@main.command()
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_friendly
def delete(name: str, yes: bool) -> None:
    """Stop endpoint NAME, delete it at the broker and remove its directory."""
    paths = cfg.EndpointPaths.of(name).require()
    config = cfg.EndpointConfig.load(paths.config)
    endpoint_id = paths.endpoint_id()
    if not yes:
        click.confirm(f"delete endpoint {name} ({endpoint_id}) and its unfinished tasks?",
                      abort=True)
    daemon.stop(name)
    answer = _broker_request("DELETE", config, f"/v1/endpoints/{endpoint_id}", ok=(404,))
    shutil.rmtree(paths.dir)
    gone = " (the broker did not know it)" if answer.status_code == 404 else ""
    click.echo(f"deleted endpoint {name} ({endpoint_id}){gone}")


def _broker_request(method: str, config: cfg.EndpointConfig, path: str,
                    ok: tuple[int, ...] = ()) -> requests.Response:
    """One REST call with the endpoint owner's token; clear errors for the CLI."""
    url = f"{config.broker_url}{path}"
    try:
        r = requests.request(method, url, timeout=30,
                             headers={"Authorization": f"Bearer {config.resolved_token()}"})
    except requests.RequestException as e:
        raise BrokerUnavailableError(f"cannot reach the broker at {config.broker_url}: {e}") \
            from e
    if not r.ok and r.status_code not in ok:
        try:
            message = r.json().get("message") or r.text
        except ValueError:
            message = r.text
        raise FnRelayError(f"{method} {path} failed ({r.status_code}): {message}")
    return r


if __name__ == "__main__":
    main()
