"""AMQP connection parameters shared by the SDK, the endpoint and the broker.

``amqps://`` URLs verify the server's certificate against FNRELAY_CA_BUNDLE when it is set
(a self-signed or private CA), else against the system's trust store (which honours
SSL_CERT_FILE). An ``ssl_options`` query in the URL wins over both.

A RabbitMQ cluster is reached through a list of URLs, one per node, separated by commas
(a password's comma is percent-quoted, so a comma always separates URLs): pika tries each
parameter set in turn, so a client connects to whichever node answers and, on reconnecting,
fails over to another when its node dies.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic

#: A PEM file of the CA(s) that signed the broker's HTTPS and RabbitMQ's AMQPS certificates.
ENV_CA_BUNDLE = "FNRELAY_CA_BUNDLE"


def ca_bundle() -> str | None:
    """The CA file users configured for fnrelay's TLS connections, if any."""
    return os.environ.get(ENV_CA_BUNDLE) or None


def requests_verify() -> bool | str:
    """`verify=` for requests/globus-sdk: the CA bundle, else True (REQUESTS_CA_BUNDLE and the
    system store apply)."""
    return ca_bundle() or True


def split_urls(urls: str) -> list[str]:
    """The URLs of a comma-separated list (one URL is a list of one)."""
    return [u.strip() for u in urls.split(",") if u.strip()]


def join_urls(urls: list[str]) -> str:
    return ",".join(urls)


def first_url(urls: str) -> str:
    """The first URL of a list: for parties that take one URL (the official Globus Compute
    SDK) and for what every node shares (user, virtual host)."""
    found = split_urls(urls)
    return found[0] if found else urls


def parameter_list(urls: str, name: str | None = None,
                   **settings: Any) -> list[pika.URLParameters]:
    """pika parameters for each URL of `urls`, each with `settings` (attribute: value), for
    `pika.BlockingConnection`, which connects to the first that answers."""
    found = []
    for url in split_urls(urls) or [urls]:
        params = connection_parameters(url, name)
        for attr, value in settings.items():
            setattr(params, attr, value)
        found.append(params)
    return found


def connection_parameters(url: str, name: str | None = None) -> pika.URLParameters:
    """pika parameters for `url` (of a list, its first); TLS (amqps) verifies the certificate
    and host name."""
    url = first_url(url)
    params = pika.URLParameters(url)
    if params.ssl_options is not None and "ssl_options=" not in url:
        context = ssl.create_default_context(cafile=ca_bundle())
        params.ssl_options = pika.SSLOptions(context, server_hostname=params.host)
    if name:
        params.client_properties = {"connection_name": name}
    return params


def process_events(conn: pika.BlockingConnection, time_limit: float) -> None:
    """`conn.process_data_events`, where a connection that broke meanwhile raises the
    connection error it is: pika then raises ValueError("Timeout closed before call") from its
    closed timer, which callers would take for a bug and die of, instead of reconnecting."""
    try:
        conn.process_data_events(time_limit=time_limit)
    except ValueError as e:
        if conn.is_open and "Timeout closed" not in str(e):
            raise
        raise pika.exceptions.StreamLostError(f"connection lost ({e})") from e


def dead_letter(channel: BlockingChannel, method: Basic.Deliver,
                props: pika.BasicProperties | None, body: bytes, reason: str) -> None:
    """Move an undecodable message to the dead-letter exchange with `reason`, then ack it.

    RabbitMQ's own dead-lettering (x-death) records no reason, so the consumer republishes the
    message with the reason in a header. If the exchange is missing or refused, the message is
    rejected without requeue instead (RabbitMQ's policy may still dead-letter it).
    """
    from fnrelay import wire

    headers = dict(getattr(props, "headers", None) or {})
    headers[wire.DEADLETTER_REASON_HEADER] = reason[:1000]
    headers["x-fnrelay-exchange"] = method.exchange or ""
    headers["x-fnrelay-routing-key"] = method.routing_key or ""
    out = pika.BasicProperties(
        content_type=getattr(props, "content_type", None), type=getattr(props, "type", None),
        delivery_mode=2, headers=headers,
    )
    try:
        channel.basic_publish(wire.DEADLETTER_EXCHANGE, "", body, out)
    except Exception:  # noqa: BLE001 - fall back to a plain reject
        channel.basic_reject(method.delivery_tag, requeue=False)
        return
    channel.basic_ack(method.delivery_tag)
