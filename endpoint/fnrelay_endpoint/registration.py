"""An endpoint's id comes from the broker: created once (POST /v1/endpoints), kept in
endpoint.json, and updated on every start (PUT /v1/endpoints/{id}, in the agent).

The broker picks ids so that no one can claim an id another party computes or has seen: a
multi-user child's, a deleted endpoint's, a shared one's.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fnrelay.config import write_private
from fnrelay_endpoint.broker_api import BrokerAPI
from fnrelay_endpoint.config.model import EndpointPaths

log = logging.getLogger(__name__)


def create(paths: EndpointPaths, broker_url: str, token: str, name: str,
           metadata: dict[str, Any]) -> str:
    """Create the endpoint at the broker and write its id to endpoint.json (0600)."""
    answer = BrokerAPI(broker_url, token).create_endpoint(name, metadata, paths.name)
    endpoint_id = str(answer["endpoint_id"])
    write_private(paths.identity, json.dumps({"endpoint_id": endpoint_id}) + "\n")
    log.info("created endpoint %s (%s) at %s", paths.name, endpoint_id, broker_url)
    return endpoint_id


def ensure_id(paths: EndpointPaths, broker_url: str, token: str, name: str,
              metadata: dict[str, Any]) -> str:
    """The endpoint's id: from endpoint.json, or created at the broker now."""
    if paths.identity.exists():
        return paths.endpoint_id()
    return create(paths, broker_url, token, name, metadata)
