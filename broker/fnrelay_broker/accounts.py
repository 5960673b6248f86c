"""RabbitMQ accounts per party, made by the broker through the management HTTP API.

Every endpoint (and every child of a multi-user endpoint) gets its own account: it may read
only its own queue(s) and write only to `fnrelay.results`, and a topic permission on that
exchange limits its routing keys to its own endpoint id (RabbitMQ checks the exchange, not
the routing key, on publish). RabbitMQ also refuses a message whose `user_id` property is not
the connection's user, so the broker learns who really sent a result from `user_id`. Every
task group gets a reader account that may only consume its group's queue. Passwords are
random, handed out once over HTTPS and reset on every hand-out: nothing is stored.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pika
import requests

from fnrelay import wire
from fnrelay.amqp import first_url, join_urls, split_urls
from fnrelay_broker.queues import QueueNames

log = logging.getLogger(__name__)

ENDPOINT_PREFIX = "fnrelay-ep-"
GROUP_PREFIX = wire.group_account("")
GC_PREFIX = "fnrelay-gc-"
_TIMEOUT = 10


class AccountError(Exception):
    """The management API refused or could not be reached."""


DEADLETTER_POLICY = "fnrelay-deadletter"
DEADLETTER_PATTERN = r"^fnrelay\.(endpoint|broker)\."
DEADLETTER_LIMIT_POLICY = "fnrelay-deadletter-limit"
#: The dead-letter queue keeps the newest this many messages and bytes.
DEADLETTER_MAX_LENGTH = 100_000
DEADLETTER_MAX_BYTES = 256 * 1024 * 1024


def endpoint_user(endpoint_id: str) -> str:
    """The RabbitMQ account name of an endpoint (the `user_id` its messages carry)."""
    return ENDPOINT_PREFIX + endpoint_id


def gc_user(user_id: str) -> str:
    """The RabbitMQ account a user's Globus Compute Executors read results with."""
    return GC_PREFIX + user_id


def group_user(task_group_id: str) -> str:
    return wire.group_account(task_group_id)


def url_with_credentials(urls: str, username: str, password: str) -> str:
    """`urls` (one, or a comma-separated list of a cluster's nodes) with the user and password
    of each replaced (both percent-quoted)."""
    return join_urls([_one_with_credentials(u, username, password)
                      for u in split_urls(urls) or [urls]])


def _one_with_credentials(url: str, username: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{quote(username, safe='')}:{quote(password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _only(*names: str) -> str:
    """A permission regex that matches exactly these names (none: matches nothing)."""
    if not names:
        return "^$"
    return "^(" + "|".join(re.escape(n) for n in names) + ")$"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


class Accounts:
    """Creates, resets and deletes the per-party accounts in the broker's virtual host."""

    def __init__(self, management_url: str, admin: tuple[str, str], amqp_url: str,
                 names: QueueNames):
        self.names = names
        #: One API per cluster node (a comma-separated `management_url`): any node serves the
        #: cluster's accounts, so a call goes to the next when one does not answer.
        self.apis = [u.rstrip("/") + "/api" for u in split_urls(management_url)]
        self.auth = admin
        self.vhost = pika.URLParameters(first_url(amqp_url)).virtual_host

    def _call(self, method: str, path: str, json: dict | None = None) -> requests.Response:
        for api in self.apis:
            try:
                r = requests.request(method, f"{api}/{path}", auth=self.auth, json=json,
                                     timeout=_TIMEOUT)
                break
            except requests.RequestException as e:
                error = e
        else:
            raise AccountError(f"RabbitMQ management API unreachable: {error}") from error
        if r.status_code >= 400 and not (method in ("GET", "DELETE") and r.status_code == 404):
            raise AccountError(f"RabbitMQ management API: {method} {path} answered "
                               f"{r.status_code}: {r.text[:200]}")
        return r

    def _put_user(self, name: str, read: str, write: str,
                  topic_write: dict[str, str]) -> Credentials:
        password = secrets.token_urlsafe(24)
        user, vhost = quote(name, safe=""), quote(self.vhost, safe="")
        self._call("PUT", f"users/{user}", {"password": password, "tags": ""})
        self._call("PUT", f"permissions/{vhost}/{user}",
                   {"configure": "^$", "write": write, "read": read})
        for exchange, pattern in topic_write.items():
            self._call("PUT", f"topic-permissions/{vhost}/{user}",
                       {"exchange": exchange, "write": pattern, "read": "^$"})
        return Credentials(name, password)

    def endpoint(self, endpoint_id: str, multi_user: bool = False) -> Credentials:
        """(Re)create an endpoint's account with a new password.

        Reads its task queue (a manager: also its control queue); writes `fnrelay.results` with
        routing key = its own id (or its id + ".forwarded") only, and the groups exchange with
        "<its id>.<group>" only (which reaches just the groups that granted it the direct
        path); declares nothing (the broker declares its queues).
        """
        queues = [self.names.endpoint(endpoint_id)]
        if multi_user:
            queues.append(self.names.control(endpoint_id))
        return self._put_user(
            endpoint_user(endpoint_id), read=_only(*queues),
            write=_only(wire.RESULTS_EXCHANGE, wire.DEADLETTER_EXCHANGE,
                        wire.GROUPS_EXCHANGE),
            topic_write={wire.RESULTS_EXCHANGE: _only(endpoint_id,
                                                      endpoint_id + wire.FORWARDED_SUFFIX),
                         wire.GROUPS_EXCHANGE: "^" + re.escape(endpoint_id) + r"\.[^.]+$"},
        )

    def group_reader(self, task_group_id: str, submit_to: str | None = None) -> Credentials:
        """(Re)create a task group's account: it may consume the group queue and, with
        `submit_to` (an endpoint id), publish tasks to `fnrelay.submit` with that routing key
        and their records with that routing key + ".records" only (the direct path); nothing
        else."""
        if submit_to is None:
            return self._put_user(group_user(task_group_id),
                                  read=_only(self.names.group(task_group_id)), write="^$",
                                  topic_write={})
        return self._put_user(group_user(task_group_id),
                              read=_only(self.names.group(task_group_id)),
                              write=_only(wire.SUBMIT_EXCHANGE),
                              topic_write={wire.SUBMIT_EXCHANGE: _only(
                                  submit_to, submit_to + wire.RECORDS_SUFFIX)})

    def gc_reader(self, user_id: str) -> Credentials:
        """(Re)create a user's account for the official Globus Compute Executor: it may only
        consume the user's own Globus Compute group queues (the user's secret prefix and a
        group id); it writes and declares nothing. One account per user, as the Executor
        asks for one URL and reads many groups with it; every hand-out resets its password
        (open connections stay; the Executor asks again before it reconnects)."""
        prefix = re.escape(self.names.gc_prefix(user_id))
        return self._put_user(gc_user(user_id), read=f"^{prefix}[0-9a-f-]{{36}}$",
                              write="^$", topic_write={})

    def deadletter_policy(self) -> None:
        """Dead-letter what fnrelay's endpoint and broker queues reject or drop.

        A policy, because queues declared before it cannot be redeclared with new x-arguments.
        """
        vhost = quote(self.vhost, safe="")
        self._call("PUT", f"policies/{vhost}/{DEADLETTER_POLICY}", {
            "pattern": DEADLETTER_PATTERN, "apply-to": "queues", "priority": 0,
            "definition": {"dead-letter-exchange": wire.DEADLETTER_EXCHANGE},
        })
        # Any endpoint may dead-letter (what it cannot decode): one tenant's flood must not
        # fill RabbitMQ's disk, whose alarm would block every tenant's publishers.
        self._call("PUT", f"policies/{vhost}/{DEADLETTER_LIMIT_POLICY}", {
            "pattern": "^" + re.escape(wire.DEADLETTER_QUEUE) + "$", "apply-to": "queues",
            "priority": 0, "definition": {"max-length": DEADLETTER_MAX_LENGTH,
                                          "max-length-bytes": DEADLETTER_MAX_BYTES,
                                          "overflow": "drop-head"},
        })

    def delete(self, username: str) -> None:
        """Delete an account; a missing one is fine."""
        self._call("DELETE", f"users/{quote(username, safe='')}")

    def usernames(self) -> list[str]:
        """The accounts with permissions in the broker's virtual host."""
        r = self._call("GET", f"vhosts/{quote(self.vhost, safe='')}/permissions")
        return [] if r.status_code == 404 else [str(p["user"]) for p in r.json()]

    def consumers(self, queue: str) -> int | None:
        """How many consumers `queue` has; None when it does not exist."""
        path = f"queues/{quote(self.vhost, safe='')}/{quote(queue, safe='')}"
        r = self._call("GET", path)
        return None if r.status_code == 404 else int(r.json().get("consumers") or 0)

    def queues(self) -> list[dict[str, Any]]:
        """Every queue of the virtual host, as the management API describes it."""
        return list(self._call("GET", f"queues/{quote(self.vhost, safe='')}").json())

    def bindings(self, queue: str) -> list[dict[str, Any]]:
        """The bindings of `queue` (not the default exchange's, which every queue has)."""
        path = f"queues/{quote(self.vhost, safe='')}/{quote(queue, safe='')}/bindings"
        return [b for b in self._call("GET", path).json() if b.get("source")]

    def delete_queue(self, queue: str) -> None:
        """Delete `queue` unless a consumer appeared meanwhile; a missing one is fine."""
        path = f"queues/{quote(self.vhost, safe='')}/{quote(queue, safe='')}?if-unused=true"
        self._call("DELETE", path)
