"""`pip install .` (not only editable) ships every package, the templates and console scripts.

Builds the wheel, installs it with --no-deps into a fresh venv that reuses this venv's
packages through a .pth file, and uses it there from a neutral directory (so the source tree
cannot stand in for the installed files).
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from support.pythons import building_from_the_checkout

ROOT = Path(__file__).resolve().parents[1]

CHECK = r"""
import importlib.resources, sys
import jinja2
import fnrelay, fnrelay_broker, fnrelay_endpoint, fnrelay_wrappers
import fnrelay.devstack.cli, fnrelay.wire  # subpackages: pyproject must list each
for mod in (fnrelay, fnrelay_broker, fnrelay_endpoint, fnrelay_wrappers, fnrelay.wire,
            fnrelay.devstack):
    assert mod.__file__.startswith(sys.prefix), (mod.__file__, sys.prefix)
templates = importlib.resources.files("fnrelay_endpoint.engines.batch") / "templates"
names = sorted(p.name for p in templates.iterdir() if p.name.endswith(".j2"))
assert "slurm.sh.j2" in names, names
env = jinja2.Environment(loader=jinja2.FunctionLoader(
    lambda name: templates.joinpath(name).read_text()))
env.filters["directive"] = str
env.filters["shquote"] = str
env.filters["envname"] = str
script = env.get_template("slurm.sh.j2").render(
    job_name="fnrelay-demo", num_nodes=1, ranks_per_node=1, cpus_per_node=2, gpus_per_node=0,
    memory=None, exclusive=False, walltime="00:10:00", partition=None, account=None,
    stdout_path="out", stderr_path="err", scheduler_options=[], sandbox="/tmp/sb",
    exit_status_file="exit_status", exports={}, prelude=[], command="echo hello")
assert script.startswith("#!/bin/bash"), script
assert "#SBATCH --job-name=fnrelay-demo" in script, script
assert "echo hello" in script, script
print("ok", ",".join(names))
"""

CHECK_ENDPOINT_FILES = r"""
import sys
import yaml
from fnrelay_endpoint.config import scaffold
from fnrelay_endpoint.multiuser import usertemplate
for name in ("endpoint.yaml", "manager.yaml"):
    text = scaffold.scaffold(name).format(name="ep", broker_url="http://b", max_workers=1)
    assert yaml.safe_load(text)["broker_url"] == "http://b", text
assert usertemplate.__file__.startswith(sys.prefix), (usertemplate.__file__, sys.prefix)
schema = usertemplate.load_schema_text(usertemplate.packaged(usertemplate.SCHEMA_FILE))
assert yaml.safe_load(usertemplate.packaged(usertemplate.IDENTITY_FILE)) is not None
text = usertemplate.packaged(usertemplate.TEMPLATE_FILE)
assert "{{" in text, text
print("ok", schema.get("type"))
"""

#: The dashboard's pages, stylesheet and vendored htmx are package data of the broker.
CHECK_DASHBOARD = r"""
import importlib.resources, sys
import fnrelay_broker.dashboard as d
assert d.__file__.startswith(sys.prefix), (d.__file__, sys.prefix)
root = importlib.resources.files("fnrelay_broker.dashboard")
for name in ("static/htmx.min.js", "static/dashboard.css", "static/dashboard.js",
             "templates/base.html",
             "templates/task.html"):
    assert root.joinpath(name).read_text(), name
print("ok")
"""

#: Prints each named module that does not import from the installed wheel.
CHECK_MODULES = r"""
import importlib.util, sys
for name in sys.argv[1:]:
    spec = importlib.util.find_spec(name)
    if spec is None or not (spec.origin or "").startswith(sys.prefix):
        print("missing", name, spec and spec.origin)
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    with building_from_the_checkout():
        build = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
             "-w", str(out), str(ROOT)],
            capture_output=True, text=True,
        )
    assert build.returncode == 0, build.stdout + build.stderr
    (found,) = out.glob("fnrelay-*.whl")
    return found


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory, wheel: Path) -> Path:
    """A new venv with only the wheel installed; dependencies come from this venv."""
    root = tmp_path_factory.mktemp("venv") / "v"
    venv.EnvBuilder(with_pip=False).create(root)
    python = root / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True)
    Path(site.stdout.strip(), "reuse-test-venv.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [python, "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
        capture_output=True, text=True,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return root


def source_modules() -> list[str]:
    """Every module of the four packages in the source tree, by dotted name."""
    names = []
    for folder in ("sdk", "broker", "endpoint", "wrappers"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_wheel_ships_packages_and_templates(fresh_venv: Path, tmp_path: Path):
    run = subprocess.run([fresh_venv / "bin" / "python", "-c", CHECK], cwd=tmp_path,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "slurm.sh.j2" in run.stdout


@pytest.mark.parametrize("script", ["fnrelay", "fnrelay-broker", "fnrelay-endpoint"])
def test_console_scripts_are_installed(fresh_venv: Path, tmp_path: Path, script: str):
    path = fresh_venv / "bin" / script
    assert path.exists()
    run = subprocess.run([path, "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "Usage" in run.stdout


def test_wheel_ships_the_config_scaffolds_and_multi_user_files(fresh_venv: Path,
                                                               tmp_path: Path):
    run = subprocess.run([fresh_venv / "bin" / "python", "-c", CHECK_ENDPOINT_FILES],
                         cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("ok")


def test_wheel_ships_every_module_of_the_source_tree(fresh_venv: Path, tmp_path: Path):
    modules = source_modules()
    assert "fnrelay_endpoint.engines.batch.schedulers.slurm" in modules
    run = subprocess.run([fresh_venv / "bin" / "python", "-c", CHECK_MODULES, *modules],
                         cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout == ""


def test_wheel_ships_the_dashboards_pages_and_htmx(fresh_venv: Path, tmp_path: Path):
    run = subprocess.run([fresh_venv / "bin" / "python", "-c", CHECK_DASHBOARD],
                         cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout == "ok\n"
