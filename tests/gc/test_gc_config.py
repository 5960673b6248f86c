"""Globus Compute endpoint directories, of both layouts GC has shipped, read by fnrelay (issue
19): GC's own shipped files (from globus-compute-endpoint installed in the GC venv), its
documentation's site examples (tests/data/globus_compute, vendored with their source), the
keys and engines they use mapped to fnrelay's, `_GC` template variables, GC's identity
mapping JSON through globus-identity-mapping, and `configure --from-globus-compute`."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pwd
import shutil
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from fnrelay.config import private_mkdir, save_credentials
from fnrelay.devstack.services import LocalEndpoint
from fnrelay.errors import ConfigurationError
from fnrelay_endpoint.config import model
from fnrelay_endpoint.config.model import EndpointConfig, ManagerConfig
from fnrelay_endpoint.multiuser import usertemplate
from fnrelay_endpoint.multiuser.identity import IdentityError, IdentityMapping, resolve
from support.session import MARKER

sys.path.insert(0, str(Path(__file__).parent))
from support_official import gc_shipped_files  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data" / "globus_compute"
ENDPOINT_CLI = str(Path(sys.executable).parent / "fnrelay-endpoint")
ME = pwd.getpwuid(os.getuid()).pw_name


@pytest.fixture(scope="module")
def shipped() -> Path:
    return gc_shipped_files()


def gc_4x_dir(shipped: Path, where: Path, id_mapping: bool = False) -> Path:
    """An endpoint directory as GC 4.x `configure` lays it out from its shipped files."""
    where.mkdir(parents=True)
    shutil.copyfile(shipped / "default_config.yaml", where / "config.yaml")
    for name in ("user_config_template.yaml.j2", "user_config_schema.json",
                 "user_environment.yaml"):
        shutil.copyfile(shipped / name, where / name)
    if id_mapping:
        shutil.copyfile(shipped / "example_identity_mapping_config.json",
                        where / "example_identity_mapping_config.json")
        config = yaml.safe_load((where / "config.yaml").read_text())
        config.update(identity_mapping_config_path=str(
            where / "example_identity_mapping_config.json"), public=True)
        (where / "config.yaml").write_text(yaml.safe_dump(config))
    return where


def render(directory: Path, config: ManagerConfig, user_config: dict
           ) -> tuple[str, EndpointConfig, dict, str | None]:
    gc = usertemplate.gc_variables(config.template_context(), ME, str(uuid.uuid4()))
    return usertemplate.render(
        (directory / usertemplate.TEMPLATE_FILE).read_text(),
        usertemplate.load_schema(directory / usertemplate.SCHEMA_FILE), user_config, {},
        config.broker_url, gc, config.template_dialect)


def test_gc_4x_shipped_files_load_as_a_manager_and_render_a_parsl_child(
        shipped, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("FNRELAY_BROKER_URL", "http://127.0.0.1:9")
    d = gc_4x_dir(shipped, tmp_path / "ep")
    config = model.load_any(d / "config.yaml")
    assert isinstance(config, ManagerConfig) and config.display_name is None
    assert (config.broker_url, config.template_dialect) == ("http://127.0.0.1:9",
                                                            "globus-compute")
    assert model.is_multi_user(d / "config.yaml")

    with caplog.at_level(logging.WARNING):
        text, child, env, init = render(d, config, {"endpoint_setup": "echo ready"})
    assert child.engine["type"] == "parsl" and child.engine["mpi"] == {"enabled": False}
    assert child.engine["provider"]["type"] == "LocalProvider"
    assert child.engine["max_workers_per_node"] == 1
    assert init == "echo ready"  # GC's endpoint_setup runs before the child starts
    notices = [r.getMessage() for r in caplog.records]
    assert any("'idle_heartbeats_soft' is ignored by fnrelay" in n for n in notices), notices

    # No user config at all renders too: GC's unset variables are its defaults.
    _, child, _, init = render(d, config, {})
    assert child.engine["type"] == "parsl" and init is None


def test_gc_template_variables_and_gc_quoting_keep_user_values_data(shipped, tmp_path,
                                                                    monkeypatch):
    monkeypatch.setenv("FNRELAY_BROKER_URL", "http://127.0.0.1:9")
    d = gc_4x_dir(shipped, tmp_path / "ep")
    (d / usertemplate.TEMPLATE_FILE).write_text(
        "display_name: {{ name }}\n"
        "engine:\n  type: ThreadPoolEngine\n  max_workers: 2\n"
        "endpoint_setup: {{ ('echo ' ~ _GC.mapped_identity.local.uname ~ ' '"
        " ~ (_GC.parent_config.template_dialect)) | tojson }}\n"
        "environment:\n  GREETING: {{ greeting | shell_escape }}\n")
    config = model.load_any(d / "config.yaml")
    assert isinstance(config, ManagerConfig)
    hostile = 'x"\nengine: {type: parsl}\n'
    _, child, env, init = render(d, config, {"name": hostile, "greeting": "it's; rm -rf /"})
    assert child.display_name == hostile and child.engine["type"] == "local"
    assert init == f"echo {ME} globus-compute"
    assert env["GREETING"] == "'it'\"'\"'s; rm -rf /'"
    for reserved in ("_GC", "parent_config", "mapped_identity", "user_runtime"):
        with pytest.raises(usertemplate.UserConfigError, match="reserved"):
            render(d, config, {reserved: "x"})
    # The token never reaches a template.
    assert "token" not in ManagerConfig(broker_url="http://x", token="s3cret").template_context()


def test_older_single_layout_and_doc_examples_map_to_fnrelay_engines(caplog):
    old = model._endpoint_data(yaml.safe_load((DATA / "v2_default_config.yaml").read_text()))
    config = EndpointConfig.from_dict({**old, "broker_url": "http://127.0.0.1:9"}, "v2")
    assert config.engine["type"] == "parsl"
    assert config.engine["provider"] == {"type": "LocalProvider", "init_blocks": 1,
                                         "min_blocks": 0, "max_blocks": 1}

    values = {"OPTIONS": "#SBATCH --gres=gpu:1", "NERSC_ACCOUNT": "m0000", "ACCOUNT": "abc",
              "PARTITION": "debug", "POLARIS_ACCOUNT": "proj", "COMMAND": "module load x"}
    seen = {}
    for example in sorted(DATA.glob("*.yaml.j2")):
        text = usertemplate.render_text(example.read_text(), values, {}, None,
                                        "globus-compute")
        with caplog.at_level(logging.WARNING):
            child = usertemplate.parse(text, "http://127.0.0.1:9")[0]
        seen[example.name] = child.engine
    assert seen["perlmutter.yaml.j2"]["provider"]["launcher"] == {"type": "SrunLauncher",
                                                                  "overrides": "-c 128"}
    assert seen["polaris.yaml.j2"]["provider"]["type"] == "PBSProProvider"
    assert seen["expanse_mpi.yaml.j2"]["mpi"] == {"enabled": True, "launcher": "srun"}
    assert seen["midway.yaml.j2"]["provider"]["account"] == "abc"
    assert all(e["type"] == "parsl" for e in seen.values())

    local = EndpointConfig.from_dict({"broker_url": "http://x", "engine": {
        "type": "ThreadPoolEngine", "max_workers": 3}})
    assert local.engine["type"] == "local" and local.max_workers == 3


@pytest.mark.parametrize("key, value", [
    ("allowed_functions", [str(uuid.uuid4())]),
    ("authentication_policy", str(uuid.uuid4())),
    ("high_assurance", True),
    ("pam", {"enable": True}),
], ids=["allowed_functions", "authentication_policy", "high_assurance", "pam"])
def test_gc_restrictions_are_refused_never_dropped(key, value):
    with pytest.raises(ConfigurationError) as e:
        EndpointConfig.from_dict({"broker_url": "http://x", key: value,
                                  "engine": {"type": "GlobusComputeEngine"}}, "config.yaml")
    assert f"config.yaml: '{key}' is not supported by fnrelay" in str(e.value)
    assert "\n" not in str(e.value)


def test_gc_identity_mapping_json_maps_through_the_library_within_the_boundary(shipped):
    """GC's shipped example maps `(.*)@example.com` to `{0}`; fnrelay gives it the broker
    username as `{username}`. Root, nobody and system accounts stay refused."""
    mapping = IdentityMapping.load(shipped / "example_identity_mapping_config.json")
    assert mapping.account_name(f"{ME}@example.com") == ME
    assert mapping.account_name(f"{ME}@example.org") is None
    with pytest.raises(IdentityError, match="root account"):
        resolve(mapping, "root@example.com", 1000, as_root=True)
    with pytest.raises(IdentityError, match="denied_accounts"):
        resolve(mapping, "nobody@example.com", 1000, as_root=True)
    with pytest.raises(IdentityError, match="system account"):
        resolve(mapping, "daemon@example.com", 1000, as_root=True)
    with pytest.raises(IdentityError, match="not mapped"):
        resolve(mapping, "daemon@elsewhere.org", 1000, as_root=True)


def test_gc_external_program_mapping(tmp_path):
    """external_identity_mapping#1.0.0: the library runs the site's program with GC's protocol."""
    program = tmp_path / "mapper.py"
    program.write_text(
        "import json, sys\n"
        "ident = json.load(sys.stdin)['identities'][0]\n"
        "out = ident['username'].split('@')[0] if ident['username'].endswith('@site.org') "
        "else None\n"
        "print(json.dumps({'DATA_TYPE': 'identity_mapping_output#1.0.0', 'result': "
        "[{'id': ident['id'], 'output': out}] if out else []}))\n")
    doc = tmp_path / "idmap.json"
    doc.write_text(json.dumps([{"DATA_TYPE": "external_identity_mapping#1.0.0",
                                "command": [sys.executable, str(program)]}]))
    mapping = IdentityMapping.load(doc, str(uuid.uuid4()))
    uid = str(uuid.uuid4())
    assert mapping.account_name("daemon@site.org", uid) == "daemon"
    assert mapping.account_name("daemon@other.org", uid) is None
    with pytest.raises(IdentityError, match="system account"):
        resolve(mapping, "daemon@site.org", 1000, as_root=True, user_id=uid)

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"DATA_TYPE": "no_such_mapping#1.0.0"}]))
    with pytest.raises(ConfigurationError, match="unknown identity mapping DATA_TYPE"):
        IdentityMapping.load(bad)


def _tree_digest(d: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(d.rglob("*")):
        h.update(str(p.relative_to(d)).encode() + (p.read_bytes() if p.is_file() else b""))
    return h.hexdigest()


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FNRELAY_")}
    return subprocess.run([ENDPOINT_CLI, *args], env={**env, "FNRELAY_HOME": str(home)},
                          capture_output=True, text=True, timeout=120)


def test_configure_from_globus_compute_converts_the_4x_layout_once(shipped, tmp_path):
    src = gc_4x_dir(shipped, tmp_path / "gc" / "site", id_mapping=True)
    before = _tree_digest(src)
    home = tmp_path / "home"
    out = _cli(home, "configure", "site", "--from-globus-compute", str(src),
               "--broker-url", "http://127.0.0.1:9")
    assert out.returncode == 0, out.stderr
    assert "template_dialect: globus-compute" in out.stdout
    assert "'public' is ignored by fnrelay" in out.stdout
    assert _tree_digest(src) == before  # the GC directory is only read
    d = home / "endpoints" / "site"
    config = ManagerConfig.load(d / "config.yaml")
    assert config.identity_mapping == "example_identity_mapping_config.json"
    assert (d / usertemplate.TEMPLATE_FILE).read_text() == (
        shipped / "user_config_template.yaml.j2").read_text()
    assert stat.S_IMODE((d / config.identity_mapping).stat().st_mode) == 0o600
    shown = _cli(home, "render-user-config", "site", "--user-config",
                 '{"endpoint_setup": "module load x"}')
    assert shown.returncode == 0, shown.stderr
    assert 'endpoint_setup: "module load x"' in shown.stdout
    assert "type: GlobusComputeEngine" in shown.stdout
    again = _cli(home, "configure", "site", "--from-globus-compute", str(src),
                 "--broker-url", "http://127.0.0.1:9")
    assert again.returncode == 1 and "--force" in again.stderr


def test_configure_from_globus_compute_refuses_what_it_cannot_honour(tmp_path):
    src = tmp_path / "gc"
    src.mkdir()
    (src / "config.yaml").write_text(yaml.safe_dump({
        "engine": {"type": "GlobusComputeEngine"}, "allowed_functions": [str(uuid.uuid4())]}))
    out = _cli(tmp_path / "home", "configure", "x", "--from-globus-compute", str(src),
               "--broker-url", "http://127.0.0.1:9")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "'allowed_functions' is not supported by fnrelay" in out.stderr
    assert not (tmp_path / "home" / "endpoints" / "x").exists()


def test_the_older_layout_converted_runs_a_task(tmp_path, broker_url, alice_token, client):
    """GC 2.x's default config.yaml (GlobusComputeEngine, a typed LocalProvider) runs on
    fnrelay's parsl engine, converted by `configure --from-globus-compute`."""
    from fnrelay import Executor

    src = tmp_path / "gc" / "old"
    src.mkdir(parents=True)
    shutil.copyfile(DATA / "v2_default_config.yaml", src / "config.yaml")
    ep = LocalEndpoint(tmp_path / "home", "old", broker_url, alice_token, marker=MARKER)
    private_mkdir(ep.home)
    save_credentials(broker_url, alice_token, home=ep.home)
    out = ep.cli("configure", "old", "--from-globus-compute", str(src))
    assert out.returncode == 0, out.stderr
    assert "engine GlobusComputeEngine -> fnrelay's parsl engine" in out.stdout
    ep.start(foreground=True)
    try:
        with Executor(endpoint_id=ep.endpoint_id, client=client) as ex:
            assert ex.submit(pow, 2, 10).result(timeout=120) == 1024
    finally:
        ep.stop()


def test_gc_2x_multi_user_config_loads_as_a_manager(tmp_path, monkeypatch):
    """GC 2.x managers said `multi_user: true` with GC's keys, and named no broker."""
    monkeypatch.setenv("FNRELAY_BROKER_URL", "http://127.0.0.1:9")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({
        "multi_user": True, "display_name": None, "public": True,
        "identity_mapping_config_path": str(tmp_path / "idmap.json")}))
    config = model.load_any(tmp_path / "config.yaml")
    assert isinstance(config, ManagerConfig)
    assert (config.template_dialect, config.identity_mapping) == (
        "globus-compute", str(tmp_path / "idmap.json"))
