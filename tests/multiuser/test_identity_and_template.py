"""Identity mapping and child config rendering, without processes."""

from __future__ import annotations

import os
import pwd

import pytest
import yaml

from fnrelay.errors import ConfigurationError
from fnrelay_endpoint.multiuser import usertemplate
from fnrelay_endpoint.multiuser.identity import IdentityError, IdentityMapping, resolve

ME = pwd.getpwuid(os.getuid()).pw_name


def test_exact_map_wins_then_rules_match_whole_names():
    m = IdentityMapping.from_dict({"map": {"alice": "a1"},
                                   "rules": [{"match": r"(\w+)@site\.org", "account": r"\1"}]})
    assert m.account_name("alice") == "a1"
    assert m.account_name("bob@site.org") == "bob"
    assert m.account_name("bob@site.org.evil") is None  # fullmatch, not search
    assert m.account_name("carol") is None


def test_unmapped_root_and_system_accounts_are_refused():
    m = IdentityMapping.from_dict({"map": {"r": "root", "d": "daemon"}})
    with pytest.raises(IdentityError, match="not mapped"):
        resolve(m, "nobody-here", 1000)
    with pytest.raises(IdentityError, match="root account"):
        resolve(m, "r", 1000)
    with pytest.raises(IdentityError, match="system account"):
        resolve(m, "d", 1000)


def test_nobody_is_refused_by_default_whatever_maps_to_it():
    """nobody's uid (65534) is above any min_uid; it is refused as an account all its users
    and the site's daemons would share."""
    m = IdentityMapping.from_dict({"map": {"n": "nobody"},
                                   "rules": [{"match": r"guest\d+", "account": "nobody"}]})
    for user in ("n", "guest7"):
        with pytest.raises(IdentityError, match="denied_accounts"):
            resolve(m, user, 1000, as_root=True)


def test_denied_accounts_are_configurable_by_name_and_uid():
    nobody = pwd.getpwnam("nobody")
    by_uid = IdentityMapping.from_dict({"map": {"n": "nobody"}, "denied_accounts": [65534]})
    with pytest.raises(IdentityError, match="denied_accounts"):
        resolve(by_uid, "n", 1000, as_root=True)
    daemon = IdentityMapping.from_dict({"map": {"d": "daemon"}, "denied_accounts": ["daemon"]})
    with pytest.raises(IdentityError, match="denied_accounts"):
        resolve(daemon, "d", 1, as_root=True)  # min_uid 1 alone would let uid 1 through
    allowed = IdentityMapping.from_dict({"map": {"n": "nobody", "r": "root"},
                                         "denied_accounts": []})
    assert resolve(allowed, "n", 1000, as_root=True).uid == nobody.pw_uid
    with pytest.raises(IdentityError, match="root account"):  # root, whatever the list says
        resolve(allowed, "r", 1000, as_root=True)
    empty = IdentityMapping.from_dict({"map": {"n": "nobody"}, "denied_accounts": None})
    with pytest.raises(IdentityError, match="denied_accounts"):  # left empty: the default
        resolve(empty, "n", 1000, as_root=True)
    for bad in ("nobody", ["nobody", True], [-1], [""], {"nobody": 1}):
        with pytest.raises(ConfigurationError, match="denied_accounts"):
            IdentityMapping.from_dict({"denied_accounts": bad})


def test_the_packaged_identity_mapping_denies_nobody():
    m = IdentityMapping.from_dict(yaml.safe_load(usertemplate.packaged(
        usertemplate.IDENTITY_FILE)))
    assert "nobody" in m.denied and 65534 in m.denied


def test_a_manager_not_run_as_root_accepts_only_its_own_account():
    m = IdentityMapping.from_dict({"map": {"me": ME, "other": "daemon"}})
    with pytest.raises(IdentityError, match="own account"):
        resolve(m, "other", 1, as_root=False)
    if os.getuid() != 0:
        assert resolve(m, "me", 1, as_root=False).name == ME


def test_packaged_template_and_schema_render_and_refuse():
    schema = usertemplate.load_schema_text(usertemplate.packaged(usertemplate.SCHEMA_FILE))
    template = usertemplate.packaged(usertemplate.TEMPLATE_FILE)
    ctx = {"user": "u", "local_user": ME, "home": "/h", "endpoint_name": "e",
           "manager_id": "m", "child_id": "c"}
    text, config, env, init = usertemplate.render(
        template, schema, {"label": "x", "max_workers": 3, "conda_env": "sim"}, ctx,
        "http://broker")
    assert config.max_workers == 3 and env == {"FNRELAY_USER_LABEL": "x"}
    assert init == "conda activate sim"
    with pytest.raises(usertemplate.UserConfigError, match=r"user_endpoint_config\.conda_env"):
        usertemplate.render(template, schema, {"conda_env": "a; rm -rf ~"}, ctx, "http://b")
    with pytest.raises(usertemplate.UserConfigError, match="reserved"):
        usertemplate.validate({"fnrelay": 1}, schema)


def test_rendered_text_must_stay_a_known_mapping():
    with pytest.raises(usertemplate.UserConfigError, match="unknown key 'evil'"):
        usertemplate.parse("evil: 1\n", "http://b")
    # A template that forgets tojson lets a value add a key: the parse refuses it.
    text = usertemplate.render_text("display_name: {{ label }}\n",
                                    {"label": "x\nworker_unknown: 1"}, {})
    with pytest.raises(usertemplate.UserConfigError, match="worker_unknown"):
        usertemplate.parse(text, "http://b")
