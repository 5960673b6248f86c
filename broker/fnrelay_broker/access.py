"""Which AMQP URL each party is handed: its own RabbitMQ account when the broker knows the
management API (isolation), else the one shared URL (development only)."""

from __future__ import annotations

import logging

import pika

from fnrelay.amqp import first_url
from fnrelay_broker.accounts import (
    AccountError,
    Accounts,
    endpoint_user,
    group_user,
    url_with_credentials,
)
from fnrelay_broker.db import Database
from fnrelay_broker.errors import ApiError
from fnrelay_broker.queues import QueueNames
from fnrelay_broker.reclaim import Reclaimer
from fnrelay_broker.settings import BrokerSettings

log = logging.getLogger(__name__)


class AmqpAccess:
    """Hands out AMQP URLs; a failure of the management API answers 503 (clients retry)."""

    def __init__(self, settings: BrokerSettings, names: QueueNames):
        self.public_url = settings.public_amqp_url or settings.amqp_url
        #: The broker's own account: the only sender endpoints accept control messages from.
        self.broker_user = pika.URLParameters(first_url(settings.amqp_url)).credentials.username
        self.accounts: Accounts | None = None
        if settings.amqp_management_url:
            assert settings.amqp_management_auth is not None
            self.accounts = Accounts(settings.amqp_management_url,
                                     settings.amqp_management_auth, settings.amqp_url, names)
        else:
            log.warning("no --amqp-management-url: endpoints and task groups share the "
                        "broker's RabbitMQ account (no isolation between parties)")

    @property
    def isolated(self) -> bool:
        return self.accounts is not None

    def endpoint_url(self, endpoint_id: str, multi_user: bool = False) -> str:
        """The URL of the endpoint's own account, with a new password (reset on every call)."""
        if self.accounts is None:
            return self.public_url
        try:
            creds = self.accounts.endpoint(endpoint_id, multi_user)
        except AccountError as e:
            log.error("cannot create the RabbitMQ account of endpoint %s: %s", endpoint_id, e)
            raise ApiError(503, "RabbitMQ accounts cannot be created now; retry later") from e
        return url_with_credentials(self.public_url, creds.username, creds.password)

    def group_url(self, task_group_id: str, submit_to: str | None = None) -> str:
        """The URL of the group's account, with a new password (`submit_to`: it may also
        publish tasks to that endpoint on the direct path)."""
        if self.accounts is None:
            return self.public_url
        try:
            creds = self.accounts.group_reader(task_group_id, submit_to)
        except AccountError as e:
            log.error("cannot create the reader account of group %s: %s", task_group_id, e)
            raise ApiError(503, "RabbitMQ accounts cannot be created now; retry later") from e
        return url_with_credentials(self.public_url, creds.username, creds.password)

    def gc_url(self, user_id: str) -> str:
        """The URL of the user's Globus Compute reader account, with a new password."""
        if self.accounts is None:
            return first_url(self.public_url)
        try:
            creds = self.accounts.gc_reader(user_id)
        except AccountError as e:
            log.error("cannot create the Globus Compute reader of user %s: %s", user_id, e)
            raise ApiError(503, "RabbitMQ accounts cannot be created now; retry later") from e
        # The official SDK parses one URL: it is handed the first node's.
        return url_with_credentials(first_url(self.public_url), creds.username, creds.password)

    def apply_policies(self) -> None:
        """Set the dead-letter policy (logged, not fatal: consumers dead-letter bad messages
        themselves; the policy only catches plain rejects)."""
        if self.accounts is None:
            return
        try:
            self.accounts.deadletter_policy()
        except AccountError as e:
            log.warning("cannot set the RabbitMQ dead-letter policy: %s", e)

    def reclaimer(self, db: Database, idle: float) -> Reclaimer | None:
        """What deletes unused accounts after `idle` seconds (None: there are none)."""
        return None if self.accounts is None else Reclaimer(db, self.accounts, idle)

    def forget_endpoint(self, endpoint_id: str) -> None:
        self._delete(endpoint_user(endpoint_id))

    def forget_group(self, task_group_id: str) -> None:
        self._delete(group_user(task_group_id))

    def _delete(self, username: str) -> None:
        if self.accounts is None:
            return
        try:
            self.accounts.delete(username)
        except AccountError as e:
            log.warning("cannot delete RabbitMQ account %s: %s", username, e)
