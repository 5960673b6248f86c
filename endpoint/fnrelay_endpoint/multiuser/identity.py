"""Identity mapping of a multi-user endpoint: broker users -> local accounts.

An exact `map` first, then `rules` (regular expressions matched against the whole username
with re.fullmatch; the account may use the match's groups). Whatever the mapping says, root,
accounts below the site's minimum uid, the mapping's `denied_accounts` and (for a manager not
run as root) anyone but the manager's own account are refused.

`denied_accounts` defaults to `nobody`: the kernel's overflow id (65534), which NFS gives to
squashed and unmappable owners and which several daemons share. Users mapped to it would share
one identity with each other and with those, so nothing local would keep them apart; its uid is
above any min_uid, so min_uid alone lets it through.
"""

from __future__ import annotations

import grp
import json
import logging
import os
import pwd
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fnrelay.errors import ConfigurationError, FnRelayError
from fnrelay_endpoint.config.model import yaml_problem

log = logging.getLogger(__name__)


class IdentityError(FnRelayError):
    """A broker user that may not run tasks here (the message says why)."""


@dataclass(frozen=True)
class LocalAccount:
    name: str
    uid: int
    gid: int
    home: str
    groups: tuple[int, ...]

    @classmethod
    def of(cls, name: str) -> LocalAccount:
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            raise IdentityError(f"local account {name!r} does not exist") from None
        return cls(name=pw.pw_name, uid=pw.pw_uid, gid=pw.pw_gid, home=pw.pw_dir,
                   groups=tuple(os.getgrouplist(pw.pw_name, pw.pw_gid)))

    @classmethod
    def current(cls) -> LocalAccount:
        return cls.of(pwd.getpwuid(os.getuid()).pw_name)


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern[str]
    account: str


#: Refused unless identity_mapping.yaml says otherwise: account names, and uids whatever the
#: account is called. 65534 is Linux's default overflow uid (`nobody`); 4294967294 is (uid_t)-2,
#: `nfsnobody` on older 64-bit Red Hat systems.
DEFAULT_DENIED_ACCOUNTS: tuple[str | int, ...] = ("nobody", "nfsnobody", 65534, 4294967294)
#: The connector id Globus Compute passes to its mappers (Globus Connect Server's POSIX one).
GC_CONNECTOR_ID = "145812c8-decc-41f1-83cf-bb2a85a2a70b"


@dataclass(frozen=True)
class IdentityMapping:
    exact: dict[str, str]
    rules: tuple[Rule, ...]
    #: Account names (str) and uids (int) refused whatever maps to them.
    denied: tuple[str | int, ...] = DEFAULT_DENIED_ACCOUNTS
    #: Globus Compute's mappers (globus-identity-mapping), tried after `exact` and `rules`.
    gc_mappers: tuple[Any, ...] = ()

    @classmethod
    def from_gc_documents(cls, documents: Any, source: str,
                          endpoint_id: str | None = None) -> IdentityMapping:
        """Globus Compute's identity mapping JSON (a list of `DATA_TYPE` documents, e.g.
        expression_identity_mapping#1.0.0 or external_identity_mapping#1.0.0), loaded by the
        globus-identity-mapping library as Globus Compute loads it."""
        from globus_identity_mapping.loader import load_mappers

        if not isinstance(documents, list) or not documents:
            raise ConfigurationError(f"{source}: expected a JSON list of identity mapping "
                                     "documents (each with a DATA_TYPE)")
        try:
            # An external program gets the endpoint's id as `-s`, as Globus Compute passes it.
            mappers = load_mappers(documents, GC_CONNECTOR_ID, endpoint_id or str(uuid.UUID(int=0)))
        except Exception as e:  # noqa: BLE001 - the library's own validation errors
            raise ConfigurationError(f"{source}: invalid identity mapping: "
                                     f"{' '.join(str(e).split())}") from None
        if len(mappers) != len(documents):
            kinds = [d.get("DATA_TYPE") for d in documents if isinstance(d, dict)]
            raise ConfigurationError(f"{source}: unknown identity mapping DATA_TYPE among "
                                     f"{kinds}")
        return cls(exact={}, rules=(), gc_mappers=tuple(mappers))

    @classmethod
    def from_dict(cls, data: Any, source: str = "identity mapping") -> IdentityMapping:
        data = data or {}
        if not isinstance(data, dict) or set(data) - {"map", "rules", "denied_accounts"}:
            raise ConfigurationError(f"{source}: expected a mapping with keys 'map', 'rules' "
                                     "and 'denied_accounts'")
        exact = data.get("map") or {}
        if not isinstance(exact, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in exact.items()):
            raise ConfigurationError(f"{source}: 'map' must map broker usernames to accounts")
        rules = []
        for i, rule in enumerate(data.get("rules") or []):
            if not (isinstance(rule, dict) and isinstance(rule.get("match"), str)
                    and isinstance(rule.get("account"), str)):
                raise ConfigurationError(f"{source}: rules[{i}] needs 'match' and 'account'")
            try:
                rules.append(Rule(re.compile(rule["match"]), rule["account"]))
            except re.error as e:
                raise ConfigurationError(f"{source}: rules[{i}].match: {e}") from None
        denied = data.get("denied_accounts")
        if denied is None:  # absent or left empty: the safe default; `[]` is how to deny none
            denied = DEFAULT_DENIED_ACCOUNTS
        if not isinstance(denied, (list, tuple)) or not all(map(_name_or_uid, denied)):
            raise ConfigurationError(f"{source}: 'denied_accounts' must be a list of account "
                                     "names and uids (e.g. [nobody, 65534]); [] denies none")
        return cls(exact=dict(exact), rules=tuple(rules), denied=tuple(denied))

    @classmethod
    def load(cls, path: Path, endpoint_id: str | None = None) -> IdentityMapping:
        try:
            if path.suffix == ".json":
                return cls.from_gc_documents(json.loads(path.read_text()), str(path),
                                             endpoint_id)
            return cls.from_dict(yaml.safe_load(path.read_text()), str(path))
        except ValueError as e:
            raise ConfigurationError(f"{path}: invalid JSON: {e}") from e
        except OSError as e:
            raise ConfigurationError(f"cannot read the identity mapping {path}: {e}") from e
        except yaml.YAMLError as e:
            raise ConfigurationError(f"{path}: invalid YAML: {yaml_problem(e)}") from e

    def account_name(self, username: str, user_id: str | None = None) -> str | None:
        """The local account name for `username`, or None if nothing maps it."""
        if username in self.exact:
            return self.exact[username]
        for rule in self.rules:
            m = rule.pattern.fullmatch(username)
            if m:
                try:
                    return m.expand(rule.account)
                except (re.error, IndexError):
                    return None
        return self._gc_account(username, user_id)

    def _gc_account(self, username: str, user_id: str | None) -> str | None:
        """The first account a Globus Compute mapper gives: the broker user is the one
        identity, `{username}` the broker username and `{id}` its user id."""
        identity = {"username": username, "id": user_id or username, "sub": user_id or username}
        for mapper in self.gc_mappers:
            try:
                name = mapper.map_identity(identity)
            except Exception as e:  # noqa: BLE001 - an external program failed: unmapped
                log.warning("identity mapper %r failed for %r: %s", mapper, username, e)
                continue
            if name:
                return str(name)
        return None


def _name_or_uid(entry: Any) -> bool:
    """An account name (non-empty text) or a uid (a YAML integer: `65534`, not `"65534"`)."""
    if isinstance(entry, str):
        return bool(entry)
    return isinstance(entry, int) and not isinstance(entry, bool) and entry >= 0


def resolve(mapping: IdentityMapping, username: str, min_uid: int,
            as_root: bool | None = None, user_id: str | None = None) -> LocalAccount:
    """The local account that runs `username`'s tasks, or IdentityError saying why not."""
    name = mapping.account_name(username, user_id)
    if not name:
        raise IdentityError(f"broker user {username!r} is not mapped to a local account on "
                            "this endpoint; ask its administrators to add you")
    account = LocalAccount.of(name)
    if account.uid == 0 or account.gid == 0:
        raise IdentityError(f"broker user {username!r} maps to {name!r}, a root account: "
                            "refused")
    if account.uid < min_uid:
        raise IdentityError(f"broker user {username!r} maps to {name!r} (uid {account.uid}), "
                            f"a system account (below min_uid {min_uid}): refused")
    if account.name in mapping.denied or account.uid in mapping.denied:
        raise IdentityError(f"broker user {username!r} maps to {name!r} (uid {account.uid}), "
                            "an account this endpoint denies (denied_accounts): refused")
    if as_root is None:
        as_root = os.geteuid() == 0
    if not as_root and account.uid != os.getuid():
        raise IdentityError(f"broker user {username!r} maps to {name!r}, but this endpoint "
                            "does not run as root and can only run tasks as its own account")
    return account


def drop_privileges(account: LocalAccount) -> None:
    """Become `account` for good: setgid, initgroups, setuid, then prove root cannot return."""
    os.setgid(account.gid)
    os.initgroups(account.name, account.gid)
    os.setuid(account.uid)
    ensure_unprivileged(account.uid)


def ensure_unprivileged(uid: int) -> None:
    """Fail unless this process runs as `uid` (real, effective and saved) and cannot get root."""
    if os.getresuid() != (uid, uid, uid) or 0 in os.getresgid():
        raise IdentityError(f"expected to run as uid {uid}, runs as {os.getresuid()} "
                            f"groups {os.getresgid()}")
    for regain in (lambda: os.setuid(0), lambda: os.seteuid(0), lambda: os.setgid(0)):
        try:
            regain()
        except PermissionError:
            continue
        raise IdentityError("dropped privileges but could get root back: refusing to run")


def group_names(account: LocalAccount) -> list[str]:
    names = []
    for gid in account.groups:
        try:
            names.append(grp.getgrgid(gid).gr_name)
        except KeyError:
            names.append(str(gid))
    return names
