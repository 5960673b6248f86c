"""Fixtures of the multi-user endpoint tests: local accounts, a venv they can run, a manager.

Children run as other local accounts, so (as root, which CI is) the tests create accounts with
useradd and remove them with userdel. The project's venv lives in root's home (mode 0700), so
children get a venv of Debian's /usr/bin/python3 under /tmp whose site-packages are hard links
to the project venv's (same files, no network, about a second).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from fnrelay import Client
from fnrelay.devstack.rabbitmq import make_shared_tmpdir
from fnrelay.devstack.services import LocalEndpoint

SYSTEM_PYTHON = "/usr/bin/python3"
CHECKOUT = Path(__file__).resolve().parents[2]

TEMPLATE = """\
engine:
  type: local
  max_workers: 1
environment:
  MU_LABEL: {{ label | default("none") | tojson }}
worker_init: {{ ("export MU_SHELL_LABEL=" ~ (label | default("none") | shquote)) | tojson }}
"""

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "label": {"type": "string", "maxLength": 200},
        "partition": {"type": "string", "pattern": "^[a-z][a-z0-9_-]*$"},
    },
    "additionalProperties": False,
}


@pytest.fixture(scope="session")
def child_python() -> Iterator[str]:
    """A python the test accounts can run, with fnrelay importable."""
    if not Path(SYSTEM_PYTHON).exists():
        pytest.skip(f"{SYSTEM_PYTHON} is missing")
    root = make_shared_tmpdir("fnrelay-mu-venv-")
    venv = root / "venv"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    target = venv / "lib" / version / "site-packages"
    shutil.rmtree(target)
    source = sysconfig.get_paths()["purelib"]
    done = subprocess.run(["cp", "-al", source, str(target)], capture_output=True)
    if done.returncode != 0:  # another filesystem: copy instead of linking
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target, symlinks=True)
    # Children run this checkout's code, as the manager does (the venv's editable install
    # may point at another one): path entries come before the editable finder.
    (target / "fnrelay-checkout.pth").write_text(
        "".join(f"{CHECKOUT / part}\n" for part in ("sdk", "broker", "endpoint", "wrappers")))
    python = str(venv / "bin" / "python")
    check = subprocess.run(["runuser", "-u", "nobody", "--", python, "-c",
                            "import fnrelay_endpoint.multiuser.child as c; print(c.__file__)"],
                           capture_output=True, text=True)
    if check.returncode != 0:
        pytest.skip(f"the child venv does not work for other accounts: {check.stderr[-500:]}")
    assert check.stdout.startswith(str(CHECKOUT)), check.stdout
    yield python
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def accounts() -> Iterator[dict[str, str]]:
    """Two fresh local accounts: {"a": name, "b": name}."""
    if os.geteuid() != 0:
        pytest.skip("creates local accounts and runs children as them: needs root")
    tag = uuid.uuid4().hex[:6]
    names = {"a": f"fnrmu-a-{tag}", "b": f"fnrmu-b-{tag}"}
    for name in names.values():
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True)
    yield names
    for name in names.values():
        subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
        subprocess.run(["userdel", "--remove", "--force", name], capture_output=True)


@pytest.fixture(scope="session")
def admin_token(broker) -> str:
    return broker.add_user("mu-admin")


@pytest.fixture(scope="session")
def carol(broker, broker_url) -> Client:
    """A broker user no identity mapping knows."""
    return Client(broker_url, broker.add_user("carol"))


@pytest.fixture
def make_manager(_workdir: Path, broker, broker_url: str, admin_token: str,
                 accounts: dict[str, str], child_python: str
                 ) -> Iterator[Callable[..., LocalEndpoint]]:
    """make_manager(**config) -> a started multi-user endpoint mapping alice -> account a,
    bob (by a regex rule) -> account b and "rooty" -> root."""
    made: list[LocalEndpoint] = []

    def make(**config) -> LocalEndpoint:
        name = f"mu-{uuid.uuid4().hex[:6]}"
        ep = LocalEndpoint(_workdir / "mu" / name, name, broker_url, admin_token,
                           marker=broker.marker)
        ep.home.mkdir(parents=True, exist_ok=True)
        out = ep.cli("configure", name, "--multi-user", "--broker-url", broker_url)
        assert out.returncode == 0, out.stderr
        mapping = {"map": {"alice": accounts["a"], "rooty": "root", "daemonic": "daemon"},
                   "rules": [{"match": "b(o)b", "account": accounts["b"]}]}
        (ep.dir / "identity_mapping.yaml").write_text(yaml.safe_dump(mapping))
        (ep.dir / "user_config_template.yaml.j2").write_text(TEMPLATE)
        (ep.dir / "user_config_schema.json").write_text(json.dumps(SCHEMA))
        ep.configure(child_python=child_python, heartbeat_period=1, **config)
        made.append(ep)
        ep.start(foreground=True)
        return ep

    yield make
    for ep in made:
        ep.stop()
