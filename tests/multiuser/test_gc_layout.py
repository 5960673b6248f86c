"""A Globus Compute 4.x multi-user endpoint directory, made of the files globus-compute-endpoint
ships (its default config.yaml, user config template and schema, and its example identity
mapping JSON), converted by `configure --from-globus-compute` and run for real (issue 19):
children start as the accounts GC's mapping names and run GC's default engine on Parsl, and the
tenant boundary's refusals hold for what GC's mapping would allow."""

from __future__ import annotations

import pwd
import shutil
import sys
import uuid
from pathlib import Path

import yaml

from fnrelay import Client, Executor
from fnrelay.devstack.services import LocalEndpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gc"))
from support_official import gc_shipped_files  # noqa: E402

WAIT = 180.0


def whoami_here() -> dict:
    import os

    return {"uid": os.getuid(), "home": os.environ.get("HOME"),
            "site": os.environ.get("SITE_SCRATCH")}


def test_gc_4x_directory_runs_children_as_gc_mapping_says(
        _workdir, broker, broker_url, admin_token, accounts, child_python):
    shipped = gc_shipped_files()
    src = _workdir / "gc-dirs" / f"site-{uuid.uuid4().hex[:6]}"
    src.mkdir(parents=True)
    shutil.copyfile(shipped / "default_config.yaml", src / "config.yaml")
    for name in ("user_config_template.yaml.j2", "user_config_schema.json",
                 "user_environment.yaml", "example_identity_mapping_config.json"):
        shutil.copyfile(shipped / name, src / name)
    with (src / "user_environment.yaml").open("a") as f:  # GC's ships all comments
        f.write("SITE_SCRATCH: /scratch/site\n")
    config = yaml.safe_load((src / "config.yaml").read_text()) or {}
    config["identity_mapping_config_path"] = str(src / "example_identity_mapping_config.json")
    (src / "config.yaml").write_text(yaml.safe_dump(config))

    name = src.name
    ep = LocalEndpoint(_workdir / "mu" / name, name, broker_url, admin_token,
                       marker=broker.marker)
    ep.home.mkdir(parents=True, exist_ok=True)
    out = ep.cli("configure", name, "--from-globus-compute", str(src))
    assert out.returncode == 0, out.stderr
    ep.configure(child_python=child_python, heartbeat_period=1)
    ep.start(foreground=True)
    try:
        # GC's example maps `(.*)@example.com` to `{0}`: the broker username is `{username}`.
        alice = Client(broker_url, broker.add_user(f"{accounts['a']}@example.com"))
        with Executor(endpoint_id=ep.endpoint_id, client=alice) as ex:
            where = ex.submit(whoami_here).result(timeout=WAIT)
        account = pwd.getpwnam(accounts["a"])
        assert (where["uid"], where["home"]) == (account.pw_uid, account.pw_dir)
        assert where["site"] == "/scratch/site"  # GC's user_environment.yaml

        for user, why in (("root@example.com", "root account"),
                          ("nobody@example.com", "denied_accounts"),
                          (f"{accounts['b']}@example.org", "not mapped")):
            other = Client(broker_url, broker.add_user(user))
            with Executor(endpoint_id=ep.endpoint_id, client=other) as ex:
                error = ex.submit(whoami_here).exception(timeout=WAIT)
            assert error is not None and why in str(error), (user, error)
    finally:
        ep.stop()
