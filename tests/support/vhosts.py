"""RabbitMQ virtual hosts for tests that start brokers of their own: a broker claims its vhost,
so each such test gets a fresh one."""

from __future__ import annotations

import uuid
from urllib.parse import quote, urlsplit, urlunsplit

import requests

from fnrelay.amqp import join_urls, split_urls


def add_vhost(management_url: str, auth: tuple[str, str], prefix: str) -> str:
    """Make a vhost named `prefix`-<random> that the administrator `auth` may use fully."""
    mgmt = management_url.rstrip("/")
    vhost = f"{prefix}-{uuid.uuid4().hex[:8]}"
    requests.put(f"{mgmt}/api/vhosts/{vhost}", auth=auth, timeout=10).raise_for_status()
    requests.put(f"{mgmt}/api/permissions/{vhost}/{auth[0]}", auth=auth, timeout=10,
                 json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()
    return vhost


def delete_vhost(management_url: str, auth: tuple[str, str], vhost: str) -> None:
    """Delete `vhost` through the first management API (of a list, one per node) that
    answers: a test that failed may have left a node down."""
    for url in split_urls(management_url):
        try:
            requests.delete(f"{url.rstrip('/')}/api/vhosts/{vhost}", auth=auth, timeout=10)
            return
        except requests.ConnectionError:
            continue


def on_vhost(amqp_url: str, vhost: str) -> str:
    """`amqp_url` (each URL of a list) with its virtual host replaced by `vhost`."""
    return join_urls([urlunsplit(urlsplit(u)._replace(path="/" + quote(vhost, safe="")))
                      for u in split_urls(amqp_url)])
