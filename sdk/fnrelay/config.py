"""Where fnrelay keeps its files, and how the SDK, CLI and endpoint find broker credentials.

Order of precedence for the broker URL and token: explicit argument, then the environment
(FNRELAY_BROKER_URL, FNRELAY_TOKEN), then the file written by `fnrelay login`
(FNRELAY_HOME/credentials.json, mode 0600).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from fnrelay.errors import ConfigurationError

ENV_HOME = "FNRELAY_HOME"
ENV_BROKER_URL = "FNRELAY_BROKER_URL"
ENV_TOKEN = "FNRELAY_TOKEN"
ENV_ENDPOINT_ID = "FNRELAY_ENDPOINT_ID"


def fnrelay_home() -> Path:
    """FNRELAY_HOME, default ~/.fnrelay (not created here)."""
    return Path(os.environ.get(ENV_HOME) or Path.home() / ".fnrelay").expanduser()


def credentials_path() -> Path:
    return fnrelay_home() / "credentials.json"


@dataclass
class Credentials:
    broker_url: str
    token: str


def save_credentials(broker_url: str, token: str, home: Path | None = None) -> Path:
    """Write credentials.json readable by the owner only."""
    path = (home or fnrelay_home()) / "credentials.json"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"broker_url": broker_url.rstrip("/"), "token": token}, f)
    os.chmod(path, 0o600)
    return path


def _saved() -> dict:
    path = credentials_path()
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigurationError(f"cannot read {path}: {e}; run `fnrelay login` again") from e


def resolve_credentials(broker_url: str | None = None, token: str | None = None) -> Credentials:
    """Find the broker URL and token, or explain how to provide them."""
    saved: dict | None = None
    if not broker_url:
        broker_url = os.environ.get(ENV_BROKER_URL)
        if not broker_url:
            saved = _saved()
            broker_url = saved.get("broker_url")
    if not token:
        token = os.environ.get(ENV_TOKEN)
        if not token:
            saved = saved if saved is not None else _saved()
            token = saved.get("token")
    if not broker_url:
        raise ConfigurationError(
            "no broker URL: pass broker_url=, set FNRELAY_BROKER_URL, or run "
            "`fnrelay login --broker-url URL --token TOKEN`"
        )
    if not token:
        raise ConfigurationError(
            "no token: pass token=, set FNRELAY_TOKEN, or run "
            "`fnrelay login --broker-url URL --token TOKEN`"
        )
    # Without a scheme, requests fails each retry and the error blames the network.
    if not broker_url.startswith(("http://", "https://")):
        raise ConfigurationError(f"broker URL {broker_url!r} must start with http:// or https://")
    return Credentials(broker_url=broker_url.rstrip("/"), token=token)
