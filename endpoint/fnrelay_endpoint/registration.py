"""An endpoint's id comes from the broker: created once (POST /v1/endpoints), kept in
endpoint.json, and updated on every start (PUT /v1/endpoints/{id}, in the agent).

The broker picks ids so that no one can claim an id another party computes or has seen: a
multi-user child's, a deleted endpoint's, a shared one's.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import requests

from fnrelay.amqp import requests_verify
from fnrelay.config import write_private
from fnrelay.errors import AuthenticationError, BrokerError, BrokerUnavailableError
from fnrelay_endpoint.config.model import EndpointPaths

log = logging.getLogger(__name__)


def create(paths: EndpointPaths, broker_url: str, token: str, name: str,
           metadata: dict[str, Any]) -> str:
    """Create the endpoint at the broker and write its id to endpoint.json (0600)."""
    try:
        r = requests.post(f"{broker_url.rstrip('/')}/v1/endpoints", timeout=30,
                          json={"name": name, "metadata": metadata}, verify=requests_verify(),
                          headers={"Authorization": f"Bearer {token}"})
    except requests.RequestException as e:
        raise BrokerUnavailableError(f"cannot reach the broker at {broker_url}: {e}") from e
    if r.status_code == 403:
        raise AuthenticationError(
            f"the broker refused to create endpoint {paths.name!r}: {error_message(r)}. An "
            "endpoint token cannot create an endpoint: start it once with a user token, "
            "then give it the endpoint token", r.status_code)
    if r.status_code == 401:
        raise AuthenticationError(f"the broker refused the token: {error_message(r)}", 401)
    if not r.ok:
        raise BrokerError(f"creating endpoint {paths.name!r} failed: {error_message(r)}",
                          r.status_code)
    endpoint_id = str(r.json()["endpoint_id"])
    write_private(paths.identity, json.dumps({"endpoint_id": endpoint_id}) + "\n")
    log.info("created endpoint %s (%s) at %s", paths.name, endpoint_id, broker_url)
    return endpoint_id


def ensure_id(paths: EndpointPaths, broker_url: str, token: str, name: str,
              metadata: dict[str, Any]) -> str:
    """The endpoint's id: from endpoint.json, or created at the broker now."""
    if paths.identity.exists():
        return paths.endpoint_id()
    return create(paths, broker_url, token, name, metadata)


def error_message(r: requests.Response) -> str:
    """The broker's own words for a failed request (its JSON `message`), else the text."""
    try:
        return str(r.json().get("message") or r.text)
    except ValueError:
        return r.text[:200] or r.reason
