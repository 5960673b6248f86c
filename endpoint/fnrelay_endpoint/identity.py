"""Identity mapping of a multi-user endpoint: broker users -> local accounts.

An exact `map` first, then `rules` (regular expressions matched against the whole username
with re.fullmatch; the account may use the match's groups). Whatever the mapping says, root,
accounts below the site's minimum uid and (for a manager not run as root) anyone but the
manager's own account are refused.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fnrelay.errors import ConfigurationError, FnRelayError
from fnrelay_endpoint.config import yaml_problem


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


@dataclass(frozen=True)
class IdentityMapping:
    exact: dict[str, str]
    rules: tuple[Rule, ...]

    @classmethod
    def from_dict(cls, data: Any, source: str = "identity mapping") -> IdentityMapping:
        data = data or {}
        if not isinstance(data, dict) or set(data) - {"map", "rules"}:
            raise ConfigurationError(f"{source}: expected a mapping with keys 'map' and 'rules'")
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
        return cls(exact=dict(exact), rules=tuple(rules))

    @classmethod
    def load(cls, path: Path) -> IdentityMapping:
        try:
            return cls.from_dict(yaml.safe_load(path.read_text()), str(path))
        except OSError as e:
            raise ConfigurationError(f"cannot read the identity mapping {path}: {e}") from e
        except yaml.YAMLError as e:
            raise ConfigurationError(f"{path}: invalid YAML: {yaml_problem(e)}") from e

    def account_name(self, username: str) -> str | None:
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
        return None


def resolve(mapping: IdentityMapping, username: str, min_uid: int,
            as_root: bool | None = None) -> LocalAccount:
    """The local account that runs `username`'s tasks, or IdentityError saying why not."""
    name = mapping.account_name(username)
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
