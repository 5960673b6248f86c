"""`fnrelay-broker`: serve the API, manage users and tokens."""

from __future__ import annotations

import logging
import signal
import sys

import click

from fnrelay_broker.settings import DEFAULT_AMQP_URL, BrokerSettings, default_db_url

_db_option = click.option(
    "--db", "db_url", envvar="FNRELAY_BROKER_DB", default=None,
    help="SQLAlchemy database URL (default: SQLite under FNRELAY_HOME/broker/).",
)


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _database(db_url: str | None):  # type: ignore[no-untyped-def]
    from sqlalchemy.exc import ArgumentError, OperationalError

    from fnrelay_broker.db import Database

    try:
        db = Database(db_url or default_db_url())
        db.create_tables()
    except (ArgumentError, OperationalError, OSError) as e:
        _fail(f"cannot open database {db_url or default_db_url()}: {e}")
    return db


@click.group()
def main() -> None:
    """fnrelay broker: REST API, function/endpoint/task registry and AMQP routing."""


@main.command()
@_db_option
@click.option("--amqp-url", envvar="FNRELAY_AMQP_URL", default=DEFAULT_AMQP_URL,
              show_default=True, help="RabbitMQ URL the broker connects to.")
@click.option("--public-amqp-url", default=None,
              help="RabbitMQ URL handed to endpoints and SDKs (default: --amqp-url).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--payload-limit", default=10 * 1024 * 1024, show_default=True, type=int,
              help="Largest request body in bytes.")
@click.option("--heartbeat-period", default=10.0, show_default=True, type=float,
              help="Seconds between endpoint heartbeats (told to endpoints).")
@click.option("--heartbeat-threshold", default=None, type=float,
              help="Seconds without heartbeat before an endpoint is offline (default 3 periods).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def serve(db_url, amqp_url, public_amqp_url, host, port, payload_limit, heartbeat_period,
          heartbeat_threshold, log_level) -> None:  # type: ignore[no-untyped-def]
    """Run the broker (HTTP API plus the AMQP publisher and consumer) until SIGTERM/SIGINT."""
    import uvicorn
    from sqlalchemy.exc import SQLAlchemyError

    from fnrelay_broker.app import create_app

    logging.getLogger("pika").setLevel(logging.WARNING)
    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = BrokerSettings(
        db_url=db_url or default_db_url(), amqp_url=amqp_url, public_amqp_url=public_amqp_url,
        host=host, port=port, payload_limit=payload_limit, heartbeat_period=heartbeat_period,
        heartbeat_threshold=heartbeat_threshold,
    )
    try:
        app = create_app(settings)
    except (SQLAlchemyError, OSError) as e:
        _fail(f"cannot open database {settings.db_url}: {e}")
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False)
    server = uvicorn.Server(config)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal to the handler
    # that was there before; a no-op one makes a clean stop exit 0 (no KeyboardInterrupt).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run()
    if not server.started:
        _fail(f"could not serve on {host}:{port} (is the port in use?)")


@main.group()
def user() -> None:
    """Manage users."""


@user.command("add")
@click.argument("name")
@_db_option
def user_add(name: str, db_url: str | None) -> None:
    """Create user NAME and print a new token alone on the last line (shown only once)."""
    from fnrelay_broker.auth import UserExistsError, create_user

    db = _database(db_url)
    try:
        user_id, token = create_user(db, name)
    except UserExistsError as e:
        _fail(str(e))
    click.echo(f"created user {name} ({user_id}); its token (shown once, stored hashed):")
    click.echo(token)


@main.group()
def token() -> None:
    """Manage API tokens."""


@token.command("create")
@click.argument("username")
@_db_option
def token_create(username: str, db_url: str | None) -> None:
    """Print a further token for USERNAME alone on the last line."""
    from fnrelay_broker.auth import create_token

    db = _database(db_url)
    try:
        new = create_token(db, username)
    except LookupError as e:
        _fail(str(e))
    click.echo(f"new token for {username} (shown once, stored hashed):")
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
