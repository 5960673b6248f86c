"""Where fnrelay keeps its files, and how the SDK, CLI and endpoint find broker credentials.

Order of precedence for the broker URL and token: explicit argument, then the environment
(FNRELAY_BROKER_URL, FNRELAY_TOKEN), then the file written by `fnrelay login`
(FNRELAY_HOME/credentials.json, mode 0600).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from fnrelay.errors import ConfigurationError

ENV_HOME = "FNRELAY_HOME"
ENV_BROKER_URL = "FNRELAY_BROKER_URL"
ENV_TOKEN = "FNRELAY_TOKEN"
ENV_ENDPOINT_ID = "FNRELAY_ENDPOINT_ID"
#: The broker database `fnrelay-broker` commands act on (`--db`); `fnrelay local up` exports it.
ENV_BROKER_DB = "FNRELAY_BROKER_DB"
#: Marks every process the local stack starts (value: the stack's marker), so that `fnrelay
#: local down` finds them all; the multi-user endpoint passes it on to the endpoints it starts.
ENV_LOCAL_STACK = "FNRELAY_LOCAL_STACK"
#: A file in the local stack's FNRELAY_HOME naming the stack's directory: a shell that
#: evaluated `fnrelay local up` has FNRELAY_HOME pointing there, not at the directory above.
LOCAL_STACK_FILE = "local-stack"


def fnrelay_home() -> Path:
    """FNRELAY_HOME, default ~/.fnrelay (not created here)."""
    return Path(os.environ.get(ENV_HOME) or Path.home() / ".fnrelay").expanduser()


def local_stack_dir() -> Path:
    """The local stack's directory: the one named in FNRELAY_HOME/local-stack (when
    FNRELAY_HOME is a stack's own home), else FNRELAY_HOME/local (default ~/.fnrelay/local)."""
    home = fnrelay_home()
    try:
        named = (home / LOCAL_STACK_FILE).read_text().strip()
    except OSError:
        named = ""
    return Path(named) if named else home / "local"


def endpoint_id_from_env() -> str:
    """FNRELAY_ENDPOINT_ID, as `eval "$(fnrelay local up)"` sets it; unset, an error saying
    how to set it (a KeyError would name the variable, not the missing step)."""
    value = os.environ.get(ENV_ENDPOINT_ID, "").strip()
    if not value:
        raise ConfigurationError(
            f"{ENV_ENDPOINT_ID} is not set: run `eval \"$(fnrelay local up)\"` in this shell "
            f"(the local stack's endpoint), or set it to your endpoint's id")
    return value


def credentials_path() -> Path:
    return fnrelay_home() / "credentials.json"


@dataclass
class Credentials:
    broker_url: str
    token: str


def private_mkdir(path: Path) -> Path:
    """Create `path` and any missing parents with mode 0700 (`mkdir -p` would give the parents
    the umask's 0755, and any local user could list them); existing ones are left as they are.
    fnrelay's state (tokens, payloads, results) must not be readable by other local users."""
    missing = []
    p = path
    while not p.exists() and not p.is_symlink():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            pass
    return path


def write_private(path: Path, text: str) -> Path:
    """Write `text` to `path` with mode 0600 from its first byte on. A new file is renamed over
    the old one: a symlink at `path` is replaced, never followed (the directory may be another
    account's), and readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def save_credentials(broker_url: str, token: str, home: Path | None = None) -> Path:
    """Write credentials.json readable by the owner only, in a directory only the owner reads."""
    path = private_mkdir(home or fnrelay_home()) / "credentials.json"
    return write_private(path, json.dumps({"broker_url": broker_url.rstrip("/"),
                                           "token": token}))


def _saved() -> dict:
    path = credentials_path()
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigurationError(f"cannot read {path}: {e}; run `fnrelay login` again") from e


def resolve_broker_url(broker_url: str | None = None) -> str:
    """The broker URL alone (argument, environment, then `fnrelay login`'s file), for commands
    that forward requests carrying their own credentials (`fnrelay gc-proxy`)."""
    broker_url = broker_url or os.environ.get(ENV_BROKER_URL) or _saved().get("broker_url")
    if not broker_url:
        raise ConfigurationError(
            "no broker URL: pass --broker-url, set FNRELAY_BROKER_URL, or run "
            "`fnrelay login --broker-url URL --token TOKEN`")
    if not broker_url.startswith(("http://", "https://")):
        raise ConfigurationError(f"broker URL {broker_url!r} must start with http:// or https://")
    return broker_url.rstrip("/")


def resolve_credentials(broker_url: str | None = None, token: str | None = None,
                        require_token: bool = True) -> Credentials:
    """Find the broker URL and token, or explain how to provide them (`require_token`
    False: the caller authenticates another way, a globus_sdk authorizer; token may be "")."""
    saved: dict | None = None
    if not broker_url:
        broker_url = os.environ.get(ENV_BROKER_URL)
        if not broker_url:
            saved = _saved()
            broker_url = saved.get("broker_url")
    other_broker = None
    if not token:
        token = os.environ.get(ENV_TOKEN)
        if not token:
            saved = saved if saved is not None else _saved()
            token = saved.get("token")
            # The saved token is for the broker it was saved with, never sent to another.
            if token and broker_url and saved.get("broker_url") and \
                    str(saved["broker_url"]).rstrip("/") != broker_url.rstrip("/"):
                other_broker, token = str(saved["broker_url"]), None
    if not broker_url:
        raise ConfigurationError(
            "no broker URL: pass broker_url=, set FNRELAY_BROKER_URL, or run "
            "`fnrelay login --broker-url URL --token TOKEN`"
        )
    if not token and require_token:
        saved_for = f" (the saved token is for {other_broker})" if other_broker else ""
        raise ConfigurationError(
            f"no token for {broker_url}{saved_for}: pass token=, set FNRELAY_TOKEN, or run "
            "`fnrelay login --broker-url URL`"
        )
    # Without a scheme, requests fails each retry and the error blames the network.
    if not broker_url.startswith(("http://", "https://")):
        raise ConfigurationError(f"broker URL {broker_url!r} must start with http:// or https://")
    return Credentials(broker_url=broker_url.rstrip("/"), token=token or "")
