"""`fnrelay-broker`: serve the API, manage users and tokens.

Every local user can read a process's command line (`ps`, /proc/PID/cmdline), only its owner
its environment: passwords come from environment variables or 0600 files, and one given on
the command line still works but is warned about. Commands that manage users and tokens act
on FNRELAY_BROKER_DB (which `fnrelay local up` exports) and name the database they wrote.
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar
from urllib.parse import unquote, urlsplit

import click
from click.core import ParameterSource

from fnrelay.amqp import first_url, split_urls
from fnrelay_broker.settings import (
    DEFAULT_ACCOUNT_IDLE,
    DEFAULT_AMQP_URL,
    DEFAULT_BLOB_LIMIT,
    DEFAULT_MAX_ENDPOINTS,
    DEFAULT_MAX_QUEUED,
    DEFAULT_METRICS_QUEUE_CACHE,
    DEFAULT_METRICS_QUEUE_PROBES,
    DEFAULT_RESULT_TTL,
    BrokerSettings,
    default_db_url,
)

if TYPE_CHECKING:  # annotations only: the commands import the database layer where used
    from fnrelay_broker.db import Database

_T = TypeVar("_T")


def _has_password(url: str) -> bool:
    try:
        return bool(urlsplit(url).password)
    except ValueError:
        return "@" in url  # malformed: say so rather than guess


def _warn_if_on_command_line(ctx: click.Context, param: click.Parameter, secret: bool,
                             instead: str) -> None:
    """Warn when a password came on the command line, where every local user can read it."""
    if secret and ctx.get_parameter_source(param.name or "") is ParameterSource.COMMANDLINE:
        name = param.opts[0] if param.opts else param.name
        _warn(ctx, f"the password in {name} is visible to every local user (ps, "
                   f"/proc/PID/cmdline); pass it in {instead} instead")


#: ctx.meta key: warnings of `serve`'s options, said once its log format is known.
_DEFERRED = "fnrelay_broker.warnings"
#: The logger of `serve`'s own lines, once its logging is set up (None: plain stderr).
_serve_log: logging.Logger | None = None


def _warn(ctx: click.Context, message: str) -> None:
    """`warning: message` on stderr; `serve`'s wait for its log format (a JSON log's reader
    expects JSON on every line) and go through its logging."""
    if ctx.info_name == "serve":
        ctx.meta.setdefault(_DEFERRED, []).append(message)
    else:
        click.echo(f"warning: {message}", err=True)


def _db_url(ctx: click.Context, param: click.Parameter, url: str | None) -> str | None:
    if url is not None:
        _warn_if_on_command_line(ctx, param, _has_password(url), "FNRELAY_BROKER_DB")
    return url


_db_option = click.option(
    "--db", "db_url", envvar="FNRELAY_BROKER_DB", default=None, callback=_db_url,
    help="SQLAlchemy database URL (default: FNRELAY_BROKER_DB, else SQLite under "
         "FNRELAY_HOME/broker/).",
)


def _fail(message: str) -> NoReturn:
    if _serve_log is not None:
        _serve_log.error(message)
    else:
        click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _sqlite_path(url: str) -> Path | None:
    """The file of an SQLite URL (None for another database or an in-memory one)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).expanduser()


def _db_failure(what: str, url: str, e: BaseException) -> NoReturn:
    """Exit with one line naming the database without its password (never a traceback)."""
    from fnrelay_broker.db import redact, redact_url

    _fail(f"{what} {redact_url(url)}: {redact(_first_line(e), url)}")


def _database(db_url: str | None) -> Database:
    from alembic.util.exc import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from fnrelay_broker.db import Database

    url = db_url or default_db_url()
    path = _sqlite_path(url)
    new = path is not None and not path.exists()
    try:
        db = Database(url)
        db.create_tables()
    except (SQLAlchemyError, CommandError, OSError) as e:
        _db_failure("cannot open database", url, e)
    if new:
        # Most likely not the database a running broker uses: say so before a token is shown.
        click.echo(f"note: there was no database at {path}: made a new one (--db or "
                   "FNRELAY_BROKER_DB names another)", err=True)
    return db


def _management_password(ctx: click.Context, param: click.Parameter, password: str | None
                         ) -> str | None:
    _warn_if_on_command_line(ctx, param, bool(password), _SAFER["amqp_management_password"])
    return password


def _management_auth(amqp_url: str, user: str | None, password: str | None
                     ) -> tuple[str, str] | None:
    """Explicit management credentials, completed from --amqp-url; None: all from it."""
    if user is None and password is None:
        return None

    parts = urlsplit(first_url(amqp_url))
    return (user or unquote(parts.username or "guest"),
            password if password is not None else unquote(parts.password or "guest"))


#: Where each RabbitMQ URL option may come from instead of the command line.
_SAFER = {"amqp_url": "FNRELAY_AMQP_URL or --amqp-url-file",
          "public_amqp_url": "FNRELAY_PUBLIC_AMQP_URL",
          "amqp_management_password": "FNRELAY_AMQP_MANAGEMENT_PASSWORD or "
                                      "--amqp-management-password-file"}


def _amqp_url(ctx: click.Context, param: click.Parameter, url: str | None) -> str | None:
    """A malformed RabbitMQ URL (of a comma-separated list, one per cluster node) is a usage
    error at once, not a traceback from the AMQP threads or a broker retrying forever (the
    message leaves out the URL: it may hold a password)."""
    if url is None:
        return None
    import pika

    try:
        for one in split_urls(url) or [url]:
            if not one.startswith(("amqp://", "amqps://")):
                raise ValueError("it must start with amqp:// or amqps://")
            pika.URLParameters(one)
    except (ValueError, IndexError) as e:
        reason = str(e) if isinstance(e, ValueError) else "it has no virtual host path"
        raise click.BadParameter(
            f"not a RabbitMQ URL like amqp://user:password@host:5672/vhost ({reason})") from None
    if param.name in _SAFER:  # not for the URL read from --amqp-url-file
        _warn_if_on_command_line(ctx, param, _has_password(url), _SAFER[param.name])
    return url


def _secret_file(ctx: click.Context, param: click.Parameter, path: str | None) -> str | None:
    """The first line of a file, for a secret kept off the command line."""
    if path is None:
        return None
    try:
        text = Path(path).read_text()
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError as e:
        raise click.BadParameter(f"cannot read {path}: {e.strerror}") from None
    lines = text.strip().splitlines()
    if not lines:
        raise click.BadParameter(f"{path} is empty")
    if mode & 0o077:
        _warn(ctx, f"{path} is readable by other local users (mode {mode:04o}): chmod 600 "
                   f"{path}")
    return lines[0].strip()


def _amqp_url_file(ctx: click.Context, param: click.Parameter, path: str | None
                   ) -> str | None:
    return _amqp_url(ctx, param, _secret_file(ctx, param, path))


def _one_of(ctx: click.Context, value: _T, name: str, from_file: str | None,
            file_option: str) -> _T | str:
    """`value` or the one read from `file_option`: both given is a usage error."""
    if from_file is None:
        return value
    if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT:
        raise click.UsageError(f"give {file_option} or --{name.replace('_', '-')} (or its "
                               "environment variable), not both")
    return from_file


def _warn_if_readable(db_url: str) -> None:
    path = _sqlite_path(db_url)
    try:
        mode = stat.S_IMODE(path.stat().st_mode) if path else 0
    except OSError:
        return
    if mode & 0o077:
        logging.getLogger("fnrelay_broker").warning(
            "%s is readable by other local users (mode %04o), and with it every payload and "
            "result: chmod 600 %s*", path, mode, path)


@click.group()
def main() -> None:
    """fnrelay broker: REST API, function/endpoint/task registry and AMQP routing."""


@main.command()
@_db_option
@click.option("--amqp-url", envvar="FNRELAY_AMQP_URL", default=DEFAULT_AMQP_URL,
              show_default=True, callback=_amqp_url,
              help="RabbitMQ URL the broker connects to. With a password, pass it in "
                   "FNRELAY_AMQP_URL or --amqp-url-file: every local user sees command lines.")
@click.option("--amqp-url-file", default=None, callback=_amqp_url_file, metavar="PATH",
              help="Read --amqp-url from the first line of this file (mode 0600).")
@click.option("--public-amqp-url", envvar="FNRELAY_PUBLIC_AMQP_URL", default=None,
              callback=_amqp_url,
              help="RabbitMQ URL handed to endpoints and SDKs (default: --amqp-url).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to serve HTTP on (0.0.0.0: all interfaces).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port to serve HTTP on (0: any free port).")
@click.option("--payload-limit", default=10 * 1024 * 1024, show_default=True,
              type=click.IntRange(min=1), metavar="BYTES", help="Largest request body.")
@click.option("--heartbeat-period", default=10.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Time between endpoint heartbeats (told to endpoints).")
@click.option("--heartbeat-threshold", default=None, type=click.FloatRange(min=0, min_open=True),
              metavar="SECONDS",
              help="Time without heartbeat before an endpoint is offline (default 3 periods).")
@click.option("--result-ttl", default=DEFAULT_RESULT_TTL, show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              metavar="SECONDS", help="Delete finished tasks and their results this long "
              "after they finished.")
@click.option("--amqp-management-url", envvar="FNRELAY_AMQP_MANAGEMENT_URL", default=None,
              help="RabbitMQ management API (e.g. http://127.0.0.1:15672): the broker then "
                   "makes one RabbitMQ account per endpoint and per task group reader. "
                   "Without it every party shares the broker's URL (no isolation).")
@click.option("--account-idle", default=DEFAULT_ACCOUNT_IDLE, show_default=True,
              type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="With --amqp-management-url: delete a task group's reader account (and "
                   "its result queue) and a child endpoint's account after this long unused; "
                   "they are made again when next needed.")
@click.option("--amqp-management-user", envvar="FNRELAY_AMQP_MANAGEMENT_USER", default=None,
              help="Management API administrator (default: the user of --amqp-url).")
@click.option("--amqp-management-password", envvar="FNRELAY_AMQP_MANAGEMENT_PASSWORD",
              default=None, callback=_management_password,
              help="Its password (default: the password of --amqp-url); better in "
                   "FNRELAY_AMQP_MANAGEMENT_PASSWORD or --amqp-management-password-file.")
@click.option("--amqp-management-password-file", default=None, callback=_secret_file,
              metavar="PATH", help="Read --amqp-management-password from this file (0600).")
@click.option("--blob-store", default=None, envvar="FNRELAY_BLOB_STORE", metavar="db|DIR",
              help="Keep results too large for a message as blobs: 'db' in this database, "
                   "or an absolute directory every broker replica mounts. Unset: such "
                   "results fail with a size error.")
@click.option("--blob-limit", default=DEFAULT_BLOB_LIMIT, show_default=True,
              type=click.IntRange(min=1), metavar="BYTES", help="Largest result blob.")
@click.option("--direct/--no-direct", default=True, show_default=True,
              help="With --amqp-management-url: let Executors publish tasks straight to "
                   "endpoints they own and take results straight from them, the broker "
                   "recording both in parallel (lower latency; docs/protocol.md).")
@click.option("--max-queued-per-user", default=DEFAULT_MAX_QUEUED, show_default=True,
              type=click.IntRange(min=0), metavar="N",
              help="Unfinished tasks one user may have; a submit beyond it is refused with a "
                   "retryable 429 (the SDK's Executor waits and resubmits). 0: no limit.")
@click.option("--max-endpoints-per-user", default=DEFAULT_MAX_ENDPOINTS, show_default=True,
              type=click.IntRange(min=0), metavar="N",
              help="Endpoints one user may have, child endpoints that multi-user endpoints "
                   "make for the user's tasks included; a registration or submit needing "
                   "one more is refused (403 TOO_MANY_ENDPOINTS). 0: no limit.")
@click.option("--metrics-queue-probes", default=DEFAULT_METRICS_QUEUE_PROBES,
              show_default=True, type=click.IntRange(min=0), metavar="N",
              help="/metrics reads the queue depth of at most N endpoints (online ones "
                   "first) per pass; fnrelay_endpoint_queues_unprobed counts the rest.")
@click.option("--metrics-queue-cache", default=DEFAULT_METRICS_QUEUE_CACHE,
              show_default=True, type=click.FloatRange(min=0), metavar="SECONDS",
              help="Scrapes within this many seconds of a pass share its queue depths "
                   "instead of asking RabbitMQ again.")
@click.option("--operator", "operators", multiple=True, metavar="USERNAME",
              envvar="FNRELAY_BROKER_OPERATORS",
              help="A user who operates this service (repeatable; in the environment, names "
                   "separated by spaces): reads /metrics and the dashboard's admin view, "
                   "which show every tenant's figures.")
@click.option("--queue-type", default="classic", show_default=True,
              type=click.Choice(["classic", "quorum"]), envvar="FNRELAY_QUEUE_TYPE",
              help="RabbitMQ type of the durable queues the broker declares: quorum on a "
                   "cluster (replicated across nodes). Queues made with the other type must "
                   "be migrated first: `fnrelay-broker queues migrate`.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]),
              help="Least level logged (debug: a line for each task received and finished).")
@click.option("--log-format", default="text", show_default=True, envvar="FNRELAY_LOG_FORMAT",
              show_envvar=True, type=click.Choice(["text", "json"], case_sensitive=False),
              help="json: one JSON object per line (time, level, logger, message, and "
                   "task_id / endpoint_id where a line is about one), for log collectors.")
@click.option("--forwarded-allow-ips", default="127.0.0.1", show_default=True,
              envvar="FNRELAY_FORWARDED_ALLOW_IPS", metavar="IPS",
              help="Load balancers (comma-separated addresses, or '*') whose "
                   "X-Forwarded-Proto/-For the broker believes: behind a TLS load balancer "
                   "the dashboard then knows it is served over HTTPS and marks its cookie "
                   "Secure.")
@click.option("--ssl-certfile", type=click.Path(exists=True, dir_okay=False), default=None,
              help="PEM certificate (chain): serve HTTPS instead of HTTP.")
@click.option("--ssl-keyfile", type=click.Path(exists=True, dir_okay=False), default=None,
              help="PEM private key of --ssl-certfile.")
def serve(db_url: str | None, amqp_url: str, public_amqp_url: str | None, host: str,
          port: int, payload_limit: int, heartbeat_period: float,
          heartbeat_threshold: float | None, result_ttl: float,
          amqp_management_url: str | None, account_idle: float,
          amqp_management_user: str | None, amqp_management_password: str | None,
          log_level: str, ssl_certfile: str | None = None, ssl_keyfile: str | None = None,
          blob_store: str | None = None, blob_limit: int = DEFAULT_BLOB_LIMIT,
          direct: bool = True, amqp_url_file: str | None = None,
          amqp_management_password_file: str | None = None,
          operators: tuple[str, ...] = (),
          max_queued_per_user: int = DEFAULT_MAX_QUEUED,
          max_endpoints_per_user: int = DEFAULT_MAX_ENDPOINTS,
          metrics_queue_probes: int = DEFAULT_METRICS_QUEUE_PROBES,
          metrics_queue_cache: float = DEFAULT_METRICS_QUEUE_CACHE, log_format: str = "text",
          forwarded_allow_ips: str = "127.0.0.1",
          queue_type: str = "classic") -> None:
    """Run the broker (HTTP API plus the AMQP publisher and consumer) until SIGTERM/SIGINT."""
    ctx = click.get_current_context()
    amqp_url = _one_of(ctx, amqp_url, "amqp_url", amqp_url_file, "--amqp-url-file")
    amqp_management_password = _one_of(ctx, amqp_management_password,
                                       "amqp_management_password",
                                       amqp_management_password_file,
                                       "--amqp-management-password-file")
    import uvicorn
    from alembic.util.exc import CommandError
    from sqlalchemy.exc import SQLAlchemyError
    from uvicorn.config import LOGGING_CONFIG

    from fnrelay import logformat
    from fnrelay_broker import vhost
    from fnrelay_broker.app import create_app
    from fnrelay_broker.blobs import BlobStoreConfigError

    logformat.configure([logging.StreamHandler()], log_level.upper(), log_format)
    _said_in(log_format, ctx.meta.get(_DEFERRED, []))
    settings = BrokerSettings(
        db_url=db_url or default_db_url(), amqp_url=amqp_url, public_amqp_url=public_amqp_url,
        host=host, port=port, payload_limit=payload_limit, heartbeat_period=heartbeat_period,
        heartbeat_threshold=heartbeat_threshold, result_ttl=result_ttl,
        amqp_management_url=amqp_management_url, account_idle=account_idle,
        amqp_management_auth=_management_auth(amqp_url, amqp_management_user,
                                              amqp_management_password),
        blob_store=blob_store, blob_limit=blob_limit, direct=direct, operators=operators,
        max_queued_per_user=max_queued_per_user, queue_type=queue_type,
        max_endpoints_per_user=max_endpoints_per_user,
        metrics_queue_probes=metrics_queue_probes, metrics_queue_cache=metrics_queue_cache,
    )
    try:
        app = create_app(settings)
    except BlobStoreConfigError as e:
        _fail(str(e))
    except (SQLAlchemyError, CommandError, OSError) as e:
        _db_failure("cannot open database", settings.db_url, e)
    _warn_if_readable(settings.db_url)
    claim = vhost.VhostClaim(settings.amqp_url, app.state.broker.names)
    try:
        claim.acquire()
    except vhost.VhostTaken as e:
        _fail(str(e))
    if bool(ssl_certfile) != bool(ssl_keyfile):
        _fail("--ssl-certfile and --ssl-keyfile go together")
    # A bounded graceful stop: requests in flight get SHUTDOWN_GRACE seconds, and an idle
    # keep-alive client (over TLS it never sends close_notify) cannot hold the stop longer.
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
                            timeout_graceful_shutdown=SHUTDOWN_GRACE,
                            proxy_headers=True, forwarded_allow_ips=forwarded_allow_ips,
                            # uvicorn formats its own lines as text; in JSON they go
                            # through the root logger's handler instead.
                            log_config=None if log_format == "json" else LOGGING_CONFIG)
    server = uvicorn.Server(config)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal to the handler
    # that was there before; a no-op one makes a clean stop exit 0 (no KeyboardInterrupt).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    taken: list[str] = []

    def stop_for(reason: str) -> None:
        taken.append(reason)
        server.should_exit = True

    keeper = vhost.ClaimKeeper(claim, stop_for)
    keeper.start()
    try:
        server.run()
    finally:
        keeper.stop()
        claim.release()
    if taken:
        _fail(taken[0])
    if not server.started:
        _fail(f"could not serve on {host}:{port} (is the port in use?)")


def _said_in(log_format: str, warnings: list[str]) -> None:
    """From now on `serve`'s warnings and errors are log lines, if JSON was asked for."""
    global _serve_log
    if log_format == "json":
        _serve_log = logging.getLogger("fnrelay_broker")
    for message in warnings:
        if _serve_log is not None:
            _serve_log.warning(message)
        else:
            click.echo(f"warning: {message}", err=True)


#: Seconds `serve` waits on SIGTERM for requests in flight and open connections.
SHUTDOWN_GRACE = 5


#: The users table's limit (a longer name fails in PostgreSQL).
USERNAME_MAX = 200


def _username(ctx: click.Context, param: click.Parameter, name: str) -> str:
    """Names are typed again (`token create`, identity mappings): no empty or invisible ones."""
    if not name or name != name.strip() or not name.isprintable() or len(name) > USERNAME_MAX:
        raise click.BadParameter(
            f"{name!r}: give 1 to {USERNAME_MAX} printable characters, without spaces at the "
            "start or end")
    return name


@main.group()
def user() -> None:
    """Manage users."""


@user.command("add")
@click.argument("name", callback=_username)
@_db_option
def user_add(name: str, db_url: str | None) -> None:
    """Create user NAME and print a new token alone on the last line (shown only once)."""
    from fnrelay_broker.auth import UserExistsError, create_user

    db = _database(db_url)
    try:
        user_id, token = create_user(db, name)
    except UserExistsError as e:
        _fail(str(e))
    click.echo(f"created user {name} ({user_id}) in {db.display_url}; its token (shown once, "
               "stored hashed):")
    click.echo(token)


@main.group()
def token() -> None:
    """Manage API tokens."""


@token.command("create")
@click.argument("username")
@click.option("--endpoint", "endpoint_id", default=None, metavar="ENDPOINT_ID",
              help="Make an endpoint token: it may only register ENDPOINT_ID (and, for a "
                   "multi-user endpoint, its children); it cannot submit or read tasks.")
@_db_option
def token_create(username: str, endpoint_id: str | None, db_url: str | None) -> None:
    """Print a further token for USERNAME alone on the last line."""
    import uuid

    from fnrelay_broker.auth import create_token

    if endpoint_id is not None:
        try:
            endpoint_id = str(uuid.UUID(endpoint_id))
        except ValueError:
            _fail(f"--endpoint {endpoint_id!r} is not an endpoint id (a UUID)")
    db = _database(db_url)
    try:
        new = create_token(db, username, endpoint_id=endpoint_id)
    except LookupError as e:
        _fail(str(e))
    scope = f"endpoint {endpoint_id} of {username}" if endpoint_id else username
    click.echo(f"new token for {scope} in {db.display_url} (shown once, stored hashed):")
    click.echo(new)


@token.command("revoke")
@click.argument("token_value", metavar="TOKEN")
@_db_option
def token_revoke(token_value: str, db_url: str | None) -> None:
    """Revoke TOKEN (the full token): requests with it answer 401 from now on."""
    from fnrelay_broker.auth import revoke_token

    db = _database(db_url)
    if not revoke_token(db, token_value):
        _fail("unknown or already revoked token")
    click.echo("token revoked")


@main.group()
def db() -> None:
    """Manage the database schema (migrations)."""


def _engine_or_fail(db_url: str | None) -> Database:
    from sqlalchemy.exc import ArgumentError

    from fnrelay_broker.db import Database

    url = db_url or default_db_url()
    try:
        return Database(url)
    except (ArgumentError, OSError) as e:
        _db_failure("cannot open database", url, e)


def _first_line(e: BaseException) -> str:
    """Database errors span lines (driver detail, links): a CLI says one."""
    text = str(getattr(e, "orig", None) or e).strip()
    return text.splitlines()[0] if text else type(e).__name__


@db.command("upgrade")
@_db_option
@click.option("--revision", default="head", show_default=True,
              help="Target revision (the brokers also upgrade to head when they start).")
def db_upgrade(db_url: str | None, revision: str) -> None:
    """Apply the schema migrations (run before starting new broker versions)."""
    from alembic.util.exc import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from fnrelay_broker import migrations

    database = _engine_or_fail(db_url)
    try:
        before = migrations.current(database.engine)
        migrations.upgrade(database.write_engine, revision)
        after = migrations.current(database.engine)
    except (SQLAlchemyError, CommandError, OSError) as e:
        _db_failure("cannot migrate", database.url, e)
    finally:
        database.dispose()
    if before == after:
        click.echo(f"database is at revision {after} (nothing to do)")
    else:
        click.echo(f"database upgraded from {before or 'empty'} to {after}")


@db.command("current")
@_db_option
def db_current(db_url: str | None) -> None:
    """Print the database's revision and the newest one this broker knows."""
    from sqlalchemy.exc import SQLAlchemyError

    from fnrelay_broker import migrations

    database = _engine_or_fail(db_url)
    try:
        click.echo(f"current: {migrations.current(database.engine) or 'none'}")
        click.echo(f"head: {migrations.head()}")
    except SQLAlchemyError as e:
        _db_failure("cannot read", database.url, e)
    finally:
        database.dispose()


@db.command("revision")
@_db_option
@click.option("-m", "--message", required=True, help="What the revision changes.")
def db_revision(db_url: str | None, message: str) -> None:
    """(Developers) autogenerate a revision from the models against a scratch database."""
    from fnrelay_broker import migrations

    database = _engine_or_fail(db_url)
    try:
        path = migrations.revision(database.write_engine, message)
    finally:
        database.dispose()
    click.echo(f"wrote {path}: read it, adjust it, and add it to version control")


@main.group()
def queues() -> None:
    """Manage fnrelay's RabbitMQ queues."""


@queues.command("migrate")
@click.option("--to", "to", required=True, type=click.Choice(["classic", "quorum"]),
              help="The queue type to move every fnrelay queue of the vhost to.")
@click.option("--amqp-url", envvar="FNRELAY_AMQP_URL", default=DEFAULT_AMQP_URL,
              show_default=True, callback=_amqp_url,
              help="The broker's RabbitMQ URL (or comma-separated list of a cluster's); better "
                   "in FNRELAY_AMQP_URL or --amqp-url-file.")
@click.option("--amqp-url-file", default=None, callback=_amqp_url_file, metavar="PATH",
              help="Read --amqp-url from the first line of this file (mode 0600).")
@click.option("--amqp-management-url", envvar="FNRELAY_AMQP_MANAGEMENT_URL", required=True,
              help="RabbitMQ management API (lists the queues, their bindings and consumers).")
@click.option("--amqp-management-user", envvar="FNRELAY_AMQP_MANAGEMENT_USER", default=None,
              help="Management API administrator (default: the user of --amqp-url).")
@click.option("--amqp-management-password", envvar="FNRELAY_AMQP_MANAGEMENT_PASSWORD",
              default=None, callback=_management_password,
              help="Its password (default: the password of --amqp-url).")
def queues_migrate(to: str, amqp_url: str, amqp_url_file: str | None,
                   amqp_management_url: str, amqp_management_user: str | None,
                   amqp_management_password: str | None) -> None:
    """Rebuild every fnrelay queue of the vhost as a TO queue, keeping its messages.

    RabbitMQ cannot change a queue's type in place, so each queue's messages move through a
    holding queue. Stop the broker (every replica), every endpoint and every Executor first:
    a queue with consumers is refused. Then start the broker with --queue-type TO.
    """
    from fnrelay_broker.accounts import AccountError, Accounts
    from fnrelay_broker.queue_migration import MigrationError, migrate
    from fnrelay_broker.queues import QueueNames

    ctx = click.get_current_context()
    amqp_url = _one_of(ctx, amqp_url, "amqp_url", amqp_url_file, "--amqp-url-file")
    auth = _management_auth(amqp_url, amqp_management_user, amqp_management_password)
    if auth is None:
        creds = urlsplit(first_url(amqp_url))
        auth = (unquote(creds.username or "guest"), unquote(creds.password or "guest"))
    accounts = Accounts(amqp_management_url, auth, amqp_url, QueueNames(b""))
    try:
        moved = migrate(amqp_url, accounts, to, report=lambda m: click.echo(m, err=True))
    except (MigrationError, AccountError) as e:
        _fail(str(e))
    except Exception as e:  # noqa: BLE001 - pika's errors: one line, the URL left out
        _fail(f"RabbitMQ refused or dropped the move ({type(e).__name__}: {e}); run the "
              "command again: it finishes what was started")
    total = sum(m.messages for m in moved)
    click.echo(f"moved {len(moved)} queue(s) with {total} message(s) to {to} queues; now start "
               f"the broker with --queue-type {to}")
