"""Broker settings: one dataclass, filled from the CLI or tests, with working local defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

import pika

from fnrelay.amqp import first_url
from fnrelay.config import fnrelay_home

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_RESULT_TTL = 7 * 24 * 3600.0
DEFAULT_BLOB_LIMIT = 1024 * 1024 * 1024
DEFAULT_ACCOUNT_IDLE = 24 * 3600.0
#: Unfinished tasks one user may have (docs/deployment.md, "Quotas").
DEFAULT_MAX_QUEUED = 100_000
#: Endpoints one user may have, child endpoints included (docs/deployment.md, "Quotas").
DEFAULT_MAX_ENDPOINTS = 1000
#: Endpoint queues /metrics probes per pass, and seconds a pass serves (docs/metrics.md).
DEFAULT_METRICS_QUEUE_PROBES = 1000
DEFAULT_METRICS_QUEUE_CACHE = 15.0


def default_db_url() -> str:
    """SQLite under FNRELAY_HOME/broker/ (the directory is created when the engine opens)."""
    return f"sqlite:///{fnrelay_home() / 'broker' / 'broker.db'}"


@dataclass
class BrokerSettings:
    db_url: str = field(default_factory=default_db_url)
    amqp_url: str = DEFAULT_AMQP_URL
    #: The AMQP URL handed to endpoints and SDKs (the broker may reach RabbitMQ another way).
    public_amqp_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    payload_limit: int = 10 * 1024 * 1024
    heartbeat_period: float = 10.0
    #: An endpoint is offline when its last heartbeat is older than this (default 3 periods).
    heartbeat_threshold: float | None = None
    #: Seconds an unused task group result queue lives (RabbitMQ x-expires).
    group_queue_expires: float = 1800.0
    #: Seconds a finished task (and its result) is kept; then the cleaner deletes it.
    result_ttl: float = DEFAULT_RESULT_TTL
    #: RabbitMQ management API (http://host:15672). Set: every endpoint, child endpoint and
    #: task group reader gets its own RabbitMQ account (see accounts.py). Unset: everyone is
    #: handed `public_amqp_url` (one shared account: no isolation; development only).
    amqp_management_url: str | None = None
    #: Administrator (user, password) of the management API; default: those of `amqp_url`.
    amqp_management_auth: tuple[str, str] | None = None
    #: Where results too large for a message are kept: 'db' (this database), an absolute
    #: directory every replica mounts, or None (no blobs: such results fail). See blobs.py.
    blob_store: str | None = None
    #: Largest result blob in bytes.
    blob_limit: int = DEFAULT_BLOB_LIMIT
    #: Seconds a task group reader or child endpoint account may go unused before the broker
    #: deletes it (made again on demand; see reclaim.py).
    account_idle: float = DEFAULT_ACCOUNT_IDLE
    #: Offer Executors the direct path (tasks published straight to the endpoint's queue and
    #: results straight back, the broker recording both in parallel) on endpoints they own.
    #: Needs per-party accounts (`amqp_management_url`): RabbitMQ must vouch for senders.
    direct: bool = True
    #: Usernames of the service's operators: they read /metrics and the dashboard's admin
    #: view (every tenant's figures); everyone else sees only their own objects.
    operators: tuple[str, ...] = ()
    #: Unfinished tasks (not yet succeeded, failed or cancelled) one user may have; a submit
    #: that would pass it is refused with a retryable 429. 0: no limit.
    max_queued_per_user: int = DEFAULT_MAX_QUEUED
    #: Endpoints one user may have, counting the child endpoints multi-user endpoints made
    #: for their tasks; a registration or submit needing one more is refused (403). 0: none.
    max_endpoints_per_user: int = DEFAULT_MAX_ENDPOINTS
    #: Endpoint queues whose depth one /metrics pass reads (online endpoints first), and
    #: seconds that pass serves every scrape (queue_probe.py).
    metrics_queue_probes: int = DEFAULT_METRICS_QUEUE_PROBES
    metrics_queue_cache: float = DEFAULT_METRICS_QUEUE_CACHE
    #: RabbitMQ type of the durable queues the broker declares: "classic" (one node) or
    #: "quorum" (a cluster: replicated). Existing queues keep their type until migrated
    #: (`fnrelay-broker queues migrate`).
    queue_type: str = "classic"

    def is_operator(self, username: str) -> bool:
        return username in self.operators

    @property
    def offline_after(self) -> float:
        """`heartbeat_threshold`, by default 3 heartbeat periods."""
        if self.heartbeat_threshold is None:
            return 3 * self.heartbeat_period
        return self.heartbeat_threshold

    def __post_init__(self) -> None:
        if not self.public_amqp_url:
            self.public_amqp_url = self.amqp_url
        if self.amqp_management_url and self.amqp_management_auth is None:
            creds = pika.URLParameters(first_url(self.amqp_url)).credentials
            self.amqp_management_auth = (creds.username, creds.password)
