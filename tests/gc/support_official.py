"""A fnrelay stack the official globus-compute-sdk reaches: a broker on 127.0.0.1:5000 (where
`GLOBUS_SDK_ENVIRONMENT=local` points the SDK) with per-party RabbitMQ accounts, an endpoint
running from the venv that has globus-compute-sdk (.venv-gc: its dill pin stays out of the
main venv), and the official SDK run in subprocesses of that venv."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from fnrelay.devstack.processes import spawn
from fnrelay.devstack.services import BrokerServer, LocalEndpoint
from support.gc_proxy import GC_PORT, holding_gc_port

ROOT = Path(__file__).resolve().parents[2]
GC_VENV = Path(os.environ.get("FNRELAY_GC_VENV", str(ROOT / ".venv-gc")))
GC_PYTHON = GC_VENV / "bin" / "python"
PORT = GC_PORT
SOURCES = os.pathsep.join(str(ROOT / p) for p in ("sdk", "broker", "endpoint", "wrappers"))
#: globus-compute-endpoint's wheels and its dependencies' (scripts/gc-wheelhouse.sh).
WHEELHOUSE = Path(os.environ.get("FNRELAY_GC_WHEELHOUSE", str(GC_VENV / "wheelhouse")))


def require_gc_venv() -> None:
    """Fail (never skip) without the official SDK's venv: `make test` makes it."""
    if not GC_PYTHON.exists():
        pytest.fail(f"no globus-compute-sdk venv at {GC_VENV}: run `make gc-venv`")


@pytest.fixture(scope="session")
def gc_venv() -> None:
    require_gc_venv()


needs_gc_venv = pytest.mark.usefixtures("gc_venv")


@pytest.fixture(scope="module")
def port_5000() -> Iterator[int]:
    """PORT, free, for this module alone while it runs (`holding_gc_port`)."""
    with holding_gc_port() as port:
        yield port


class GlobusComputeEndpoint(LocalEndpoint):
    """A fnrelay endpoint whose processes run in the globus-compute-sdk venv (fnrelay from
    this checkout on PYTHONPATH), as a site installs `fnrelay[globus-compute]`."""

    def env(self) -> dict[str, str]:
        return {**super().env(), "PYTHONPATH": SOURCES}

    def start(self, foreground: bool | None = None, timeout: float = 60.0
              ) -> GlobusComputeEndpoint:
        if not self.config_path.exists():
            self.configure()
        argv = [str(GC_PYTHON), "-c", "from fnrelay_endpoint.cli import main; main()",
                "start", self.name, "--foreground"]
        self.foreground = True
        self.proc = spawn(argv, self.home / f"{self.name}.console.log", self.env())
        self.wait_status("online", timeout)
        return self


def sdk_env(home: Path, user_id: str, token: str) -> dict[str, str]:
    """The environment of an unchanged official Client: local services, our token route."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GLOBUS_", "PYTHONPATH", "FNRELAY_"))}
    return {**env, "HOME": str(home), "GLOBUS_SDK_ENVIRONMENT": "local",
            "GLOBUS_SDK_SERVICE_URL_AUTH": f"http://localhost:{PORT}/",
            "GLOBUS_COMPUTE_CLIENT_ID": user_id, "GLOBUS_COMPUTE_CLIENT_SECRET": token}


@dataclass
class Party:
    """A broker user as the official SDK sees one: client id = user id, secret = token."""

    name: str
    user_id: str
    token: str
    home: Path

    def env(self) -> dict[str, str]:
        return sdk_env(self.home, self.user_id, self.token)

    def call(self, method: str, path: str, **kw) -> requests.Response:
        return requests.request(method, f"http://127.0.0.1:{PORT}{path}", timeout=10,
                                headers={"Authorization": f"Bearer {self.token}"}, **kw)

    def get(self, path: str) -> requests.Response:
        return self.call("GET", path)


def add_party(broker: BrokerServer, name: str, d: Path) -> Party:
    """A new broker user `name` with a home of its own under `d`."""
    token = broker.add_user(name)
    who = requests.get(f"{broker.url}/v1/whoami", timeout=10,
                       headers={"Authorization": f"Bearer {token}"}).json()
    home = d / f"home-{name}"
    home.mkdir(parents=True)
    return Party(name, who["user_id"], token, home)


#: Put before every SDK script: `result_of` waits out TaskPending (the official SDK's and
#: fnrelay's, same name), raising the task's failure as the client raises it.
SDK_PRELUDE = """\
import time as _time


def result_of(client, task_id, timeout=60):
    deadline = _time.time() + timeout
    while True:
        try:
            return client.get_result(task_id)
        except Exception as e:
            if type(e).__name__ != "TaskPending" or _time.time() > deadline:
                raise
            _time.sleep(0.3)
"""


def run_sdk(script: str, env: dict[str, str], timeout: float = 180,
            python: Path = GC_PYTHON) -> dict:
    """Run `script` with the official SDK (in `python`'s venv); it prints one JSON line
    last, returned here."""
    code = SDK_PRELUDE + textwrap.dedent(script)
    out = subprocess.run([str(python), "-c", code], env=env,
                         capture_output=True, text=True, timeout=timeout,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, f"stdout:\n{out.stdout[-3000:]}\nstderr:\n{out.stderr[-5000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def gc_shipped_files() -> Path:
    """The folder of config files globus-compute-endpoint ships (default_config.yaml,
    user_config_template.yaml.j2, user_config_schema.json, the identity mapping example), in
    its package as installed in the GC venv: tests read them as they ship."""
    require_gc_venv()
    out = subprocess.run(
        [str(GC_PYTHON), "-c", "import os, globus_compute_endpoint.endpoint.config as c; "
         "print(os.path.dirname(c.__file__))"], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.fail(f"globus-compute-endpoint is not installed in {GC_VENV}: run `make "
                    f"gc-venv` ({out.stderr.strip()[-300:]})")
    return Path(out.stdout.strip())


SYSTEM_PYTHON = "/usr/bin/python3"


def shared_gc_venv(dest: Path) -> Path:
    """A copy of .venv-gc other local accounts can run (its interpreter lives in root's
    home, mode 0700): a venv of the system Python of the same version, its site-packages
    hard links to .venv-gc's (no network, about a second), its scripts' `#!` lines
    pointing at it. Returns its bin directory."""
    version = subprocess.run([str(GC_PYTHON), "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout
    system = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
                            capture_output=True, text=True).stdout
    if version != system:
        pytest.fail(f"{SYSTEM_PYTHON} is Python {system.strip()}, .venv-gc {version.strip()}: "
                    "other accounts need a venv of the same version")
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(dest)], check=True)
    pyver = "python" + version.strip("()\n").replace(", ", ".")
    target = dest / "lib" / pyver / "site-packages"
    shutil.rmtree(target)
    source = GC_VENV / "lib" / pyver / "site-packages"
    if subprocess.run(["cp", "-al", str(source), str(target)]).returncode != 0:
        shutil.rmtree(target, ignore_errors=True)  # another filesystem: copy instead
        shutil.copytree(source, target, symlinks=True)
    bindir = dest / "bin"
    for script in (GC_VENV / "bin").iterdir():
        if script.is_file() and not script.is_symlink() and not (bindir / script.name).exists():
            text = script.read_bytes()
            if text.startswith(f"#!{GC_VENV}/bin/".encode()):
                first, _, rest = text.partition(b"\n")
                (bindir / script.name).write_bytes(f"#!{bindir}/python3\n".encode() + rest)
                (bindir / script.name).chmod(0o755)
    return bindir


def gc_wheelhouse() -> Path:
    """The wheelhouse of globus-compute-endpoint at .venv-gc's version, built on first use
    (`make gc-venv` builds it too)."""
    require_gc_venv()
    out = subprocess.run([str(ROOT / "scripts" / "gc-wheelhouse.sh"), str(GC_VENV),
                          str(WHEELHOUSE)], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.fail(f"cannot build the wheelhouse {WHEELHOUSE}: {out.stderr.strip()[-1500:]}")
    return WHEELHOUSE


def give_uv(account: str, wheelhouse: Path) -> None:
    """What GC's default template needs of a local account, the way a site without internet
    gives it: `uv` in ~/.local/bin (the template puts it first on PATH, and curls uv's
    installer only when none is there) and ~/.config/uv/uv.toml naming the site's index
    (here: `wheelhouse` alone) and the machine's Pythons. The template stays as shipped."""
    uv = shutil.which("uv", path=str(GC_VENV / "bin"))
    if uv is None:
        pytest.fail(f"no uv in {GC_VENV}/bin: run `make gc-venv` (the endpoint extra has it)")
    home = Path(pwd.getpwnam(account).pw_dir)
    (home / ".local" / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(uv, home / ".local" / "bin" / "uv")
    (home / ".config" / "uv").mkdir(parents=True, exist_ok=True)
    (home / ".config" / "uv" / "uv.toml").write_text(
        f'no-index = true\nfind-links = ["{wheelhouse}"]\npython-downloads = "never"\n')
    for sub in (".local", ".config"):
        subprocess.run(["chown", "-R", f"{account}:", str(home / sub)], check=True)
