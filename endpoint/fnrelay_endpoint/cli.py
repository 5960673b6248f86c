"""`fnrelay-endpoint`: configure, start, stop, list, inspect and delete endpoints."""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from fnrelay import logformat, token_input
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


_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@main.command()
@click.argument("name")
@click.option("--broker-url", help="Broker URL (default: FNRELAY_BROKER_URL or `fnrelay login`).")
@click.option("--max-workers", type=click.IntRange(min=1), help="Worker processes (default: CPUs).")
@click.option("--force", is_flag=True, help="Overwrite an existing config (the id is kept).")
@click.option("--multi-user", type=click.BOOL, is_flag=False, flag_value=True, default=False,
              metavar="[BOOLEAN]",
              help="A manager that starts a child endpoint per user and user_endpoint_config "
                   "(a bare flag, or Globus Compute's `--multi-user true|false`).")
@click.option("--display-name", help="A human readable display name for the endpoint.")
@click.option("--from-globus-compute", "from_gc", metavar="DIR",
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Convert a Globus Compute endpoint directory (either layout), once.")
@click.option("--auth-policy", metavar="ID",
              help="Globus Compute's auth policy: not supported by fnrelay (refused).")
@click.option("--contact-email", help="Accepted for Globus Compute's CLI; not stored.")
@click.option("--core-config", "--manager-config", "--endpoint-config", "core_config",
              type=_FILE, help="Use this config.yaml (Globus Compute's keys or fnrelay's).")
@click.option("--template-config", type=_FILE,
              help="Use this user_config_template.yaml.j2 (Globus Compute's dialect).")
@click.option("--schema-config", type=_FILE, help="Use this user_config_schema.json.")
@click.option("--user-env-config", type=_FILE,
              help="Use this user_environment.yaml (variables every child gets).")
@click.option("--id-mapping-config", type=_FILE,
              help="Use this identity mapping (Globus Compute's JSON or fnrelay's YAML).")
@_friendly
def configure(name: str, broker_url: str | None, max_workers: int | None, force: bool,
              multi_user: bool, display_name: str | None, from_gc: Path | None,
              auth_policy: str | None, contact_email: str | None, core_config: Path | None,
              template_config: Path | None, schema_config: Path | None,
              user_env_config: Path | None, id_mapping_config: Path | None) -> None:
    """Create endpoint NAME's directory and a commented config.yaml."""
    # Here, not at the top: it loads the multi-user templating (Jinja2, jsonschema), which
    # every other command, and the local engine's forkserver preloading this module, can skip.
    from fnrelay_endpoint.config import from_globus, scaffold

    if auth_policy:
        raise click.ClickException(
            "--auth-policy is not supported by fnrelay: it has no Globus Auth policies; the "
            "broker's accounts and the endpoint's identity mapping decide who runs tasks")
    if from_gc is not None:
        paths, endpoint_id, changes = from_globus.convert(name, from_gc, broker_url, force,
                                                          display_name)
        click.echo(f"converted {from_gc} into endpoint {name} ({_id_note(endpoint_id)})")
        for line in changes:
            click.echo(f"  {line}")
        click.echo(f"config: {paths.config}")
        click.echo(f"start it with: fnrelay-endpoint start {name}")
        return
    if multi_user:
        paths, endpoint_id = scaffold.configure_multi_user(name, broker_url, force)
    else:
        paths, endpoint_id = scaffold.configure(name, broker_url, max_workers, force)
    changes = from_globus.apply_overrides(paths, multi_user, core_config, template_config,
                                          schema_config, id_mapping_config, display_name,
                                          user_env_config)
    kind = "multi-user endpoint" if multi_user else "endpoint"
    click.echo(f"configured {kind} {name} ({_id_note(endpoint_id)})")
    for line in changes:
        click.echo(f"  {line}")
    click.echo(f"config: {paths.config}")
    if multi_user:
        click.echo(f"edit also: {paths.dir}/user_config_template.yaml.j2, "
                   "user_config_schema.json, identity_mapping.yaml")
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


# --- Globus Compute's admin commands ------------------------------------------------------------
@main.command()
@click.option("--broker-url", help="Broker URL (default: FNRELAY_BROKER_URL or the saved one).")
@token_input.token_options
@click.option("--force", is_flag=True, help="Log in even if already logged in.")
@_friendly
def login(broker_url: str | None, token: str | None, token_file: str | None,
          force: bool) -> None:
    """Save the broker token that endpoints without 'token' in config.yaml use."""
    from fnrelay.config import save_credentials
    from fnrelay_endpoint.config.scaffold import default_broker_url

    url = broker_url or default_broker_url()
    if not url:
        raise click.ClickException("no broker URL: pass --broker-url or set "
                                   "FNRELAY_BROKER_URL")
    token = token_input.given_token(token, token_file)
    if not force and token is None:
        who = _saved_identity(url)
        if who:
            click.echo(f"Already logged in as {who} at {url}. Use --force to log in anyway")
            return
    token = token or token_input.asked_token()
    who = _identity(url, token)
    path = save_credentials(url, token)
    click.echo(f"Logged in to {url.rstrip('/')} as {who} (credentials in {path})")


def _identity(url: str, token: str) -> str:
    """`name (user id)` of `token` at the broker; a clear error if it refuses it."""
    who = BrokerAPI(url, token).whoami()
    return f"{who['username']} ({who['user_id']})"


def _saved_identity(url: str) -> str | None:
    """Who the saved credentials for `url` are, or None (none, another broker, refused).
    Only a token saved for `url` itself is sent to it: never the environment's, nor one
    saved for another broker (a "log in to our broker" URL must not collect tokens)."""
    from fnrelay.config import credentials_path

    try:
        saved = json.loads(credentials_path().read_text())
    except (OSError, ValueError):
        return None
    token = saved.get("token") if isinstance(saved, dict) else None
    if not token or str(saved.get("broker_url") or "").rstrip("/") != url.rstrip("/"):
        return None
    try:
        return _identity(url, str(token))
    except FnRelayError:
        return None


@main.command()
@click.option("--force", is_flag=True, help="Remove the token even while endpoints run.")
@_friendly
def logout(force: bool) -> None:
    """Remove the saved broker token (endpoints with 'token' in config.yaml keep theirs)."""
    from fnrelay.config import credentials_path

    running = [d.name for d in _endpoint_dirs() if daemon.running_pid(d)]
    if running and not force:
        click.echo(f"The following endpoints are currently running: {', '.join(running)}\n"
                   "Please use logout --force to proceed")
        return
    path = credentials_path()
    if not path.exists():
        click.echo("Not logged in (no saved token)")
        return
    path.unlink()
    click.echo(f"Logout succeeded: removed {path}. The token stays valid at the broker until "
               "its administrator revokes it (fnrelay-broker token revoke)")


def _endpoint_dirs() -> list[cfg.EndpointPaths]:
    root = cfg.endpoints_dir()
    found = (cfg.EndpointPaths(d.name, d) for d in sorted(root.iterdir())) if root.is_dir() \
        else iter(())
    return [p for p in found if p.exists()]


@main.command()
@click.option("--linked-identities", is_flag=True,
              help="Accepted for Globus Compute's CLI: a broker user has one identity.")
@_friendly
def whoami(linked_identities: bool) -> None:
    """Show the broker user of the saved token."""
    from fnrelay.config import resolve_credentials

    creds = resolve_credentials()
    click.echo(f"{_identity(creds.broker_url, creds.token)} at {creds.broker_url}")


@main.command()
@click.argument("name")
@click.pass_context
@_friendly
def restart(ctx: click.Context, name: str) -> None:
    """Stop endpoint NAME, then start it in the background."""
    cfg.EndpointPaths.of(name).require()
    ctx.invoke(stop, name=name)
    ctx.invoke(start, name=name, foreground=False)


@main.command("python-exec", context_settings={"ignore_unknown_options": True,
                                               "allow_extra_args": True})
@click.argument("module")
@click.pass_context
def python_exec(ctx: click.Context, module: str) -> None:
    """Run Python module MODULE with the endpoint's interpreter (`python -m MODULE ARGS`)."""
    os.execvpe(sys.executable, [sys.executable, "-m", module, *ctx.args], os.environ)


_UNIT_DIR = click.option("--unit-dir", type=click.Path(path_type=Path), show_default=True,
                         default="/etc/systemd/system", help="Where systemd units live.")


@main.command("enable-on-boot")
@click.argument("name")
@_UNIT_DIR
@_friendly
def enable_on_boot(name: str, unit_dir: Path) -> None:
    """Install a systemd unit that starts endpoint NAME when the machine boots."""
    from fnrelay_endpoint import boot

    boot.require_dir(unit_dir)
    paths = cfg.EndpointPaths.of(name).require()
    if daemon.running_pid(paths):
        raise click.ClickException(f"endpoint {name} is running: stop it, then enable "
                                   "on-boot persistence")
    cfg.load_any(paths.config).resolved_token()  # systemd cannot ask for one
    path, command = boot.enable(name, unit_dir)
    click.echo(f"Systemd service installed at {path}. Run\n\tsudo {command}\n"
               "to enable the service and start the endpoint.")


@main.command("disable-on-boot")
@click.argument("name")
@_UNIT_DIR
@_friendly
def disable_on_boot(name: str, unit_dir: Path) -> None:
    """Print the commands that remove endpoint NAME's systemd unit."""
    from fnrelay_endpoint import boot

    cfg.check_name(name)
    click.echo("Run the following to disable on-boot persistence:\n"
               + boot.disable_commands(name, unit_dir))


if __name__ == "__main__":
    main()
