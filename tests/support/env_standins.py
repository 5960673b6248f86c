"""Stand-ins for conda, micromamba, Apptainer and podman, which cannot run on this machine.

Each is a small executable put first on PATH. It records its argv (one JSON line per call in a
log), checks the parts of the documented command line fnrelay relies on, and then does what the
real tool would do for the command it wraps: run it with a real virtual environment's ``bin``
first on PATH (a conda env, or the Python inside an image). The venvs are real (``python -m
venv``), with fnrelay and dill importable through a .pth file, so a task that reports its
``sys.prefix`` proves which interpreter ran it: the environment's, not the endpoint's.

Command lines followed: ``conda shell.bash hook`` / ``conda activate`` / ``conda run
--no-capture-output -n|-p`` (conda 24 docs), ``micromamba shell hook --shell bash`` /
``micromamba activate`` / ``micromamba run -n|-p`` (mamba.readthedocs.io, micromamba 1.5/2.x),
``apptainer exec [--bind] [--pwd] [--nv|--rocm] IMAGE CMD`` (apptainer-exec(1), 1.3),
``podman run --rm [-v] [-w] [-e NAME|-e 'PREFIX*'] IMAGE CMD`` (podman-run(1), 4.x/5.x).
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: What a task's environment must hold for fnrelay's in-job worker: fnrelay and dill.
IMPORT_PATHS = [ROOT / "sdk", ROOT / "endpoint", ROOT / "wrappers",
                Path(sysconfig.get_paths()["purelib"])]


def make_venv(path: Path) -> Path:
    """A real venv at `path` in which fnrelay and dill import (a .pth file points at them)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True,
                   timeout=120)
    purelib = subprocess.run(
        [str(path / "bin" / "python3"), "-c",
         "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "fnrelay_standin.pth").write_text(
        "".join(f"{p}\n" for p in IMPORT_PATHS))
    return path


_COMMON = '''#!{python}
"""Stand-in for {tool} (tests/support/env_standins.py): records argv, runs in a real venv."""
import json, os, sys
LOG, ENVS, IMAGES = {log!r}, {envs!r}, {images!r}
argv = sys.argv[1:]
with open(LOG, "a") as f:
    f.write(json.dumps(["{tool}", *argv]) + "\\n")

def fail(why):
    sys.stderr.write("{tool} stand-in: " + why + "\\n")
    sys.exit(2)

def venv_of(selector, target):
    if selector == "-p":
        return target
    if target not in ENVS:
        fail("no environment named " + repr(target))
    return ENVS[target]

def run_in(venv, cmd, env=None, cwd=None):
    if not cmd:
        fail("no command to run")
    env = dict(os.environ if env is None else env)
    env["PATH"] = venv + "/bin:" + env.get("PATH", "/usr/bin:/bin")
    env["CONDA_PREFIX"] = venv
    if cwd:
        os.chdir(cwd)
    os.execvpe(cmd[0], cmd, env)
'''

_CONDA = '''
# `conda shell.bash hook` defines the shell function `conda`; `activate` is that function's
# job. Like conda's own activate.d scripts, the activation reads a variable nobody set, which
# kills a shell running under `set -u`.
if argv[:2] == ["shell.bash", "hook"] and "{tool}" == "conda" or \\
        argv[:4] == ["shell", "hook", "--shell", "bash"] and "{tool}" == "micromamba":
    print('{tool}() {{ if [ "$1" = activate ]; then '
          'eval "$(command {tool} __activate "$2")"; else command {tool} "$@"; fi; }}')
elif argv[:1] == ["__activate"] and len(argv) == 2:
    venv = venv_of("-p" if argv[1].startswith("/") else "-n", argv[1])
    print(f'export FNRELAY_STANDIN_BACKUP="${{{{CONDA_BACKUP_PATH}}}}"; '
          f'export PATH="{{venv}}/bin:$PATH" CONDA_PREFIX="{{venv}}" '
          f'CONDA_DEFAULT_ENV="{{argv[1]}}"')
elif argv[:1] == ["run"]:
    rest = argv[1:]
    if "{tool}" == "conda":
        if rest[:1] != ["--no-capture-output"]:
            fail("fnrelay runs `conda run --no-capture-output` so output streams")
        rest = rest[1:]
    if len(rest) < 3 or rest[0] not in ("-n", "-p"):
        fail("run needs -n NAME or -p PREFIX, then the command")
    run_in(venv_of(rest[0], rest[1]), rest[2:])
else:
    fail("unsupported arguments " + repr(argv))
'''

_APPTAINER = '''
if argv[:1] != ["exec"]:
    fail("only `exec` is used by fnrelay")
VALUED = {{"--bind", "-B", "--pwd", "--env", "--home", "-H"}}
i, pwd = 1, None
while i < len(argv) and argv[i].startswith("-"):
    if argv[i] in VALUED:
        if argv[i] in ("--bind", "-B"):
            src = argv[i + 1].split(":")[0]
            if not os.path.exists(src):
                fail("bind source does not exist: " + src)
        if argv[i] == "--pwd":
            pwd = argv[i + 1]
        i += 2
    else:
        i += 1
if i >= len(argv) or argv[i] not in IMAGES:
    fail("unknown image " + repr(argv[i:i + 1]))
run_in(IMAGES[argv[i]], argv[i + 1:], cwd=pwd)
'''

_PODMAN = '''
import fnmatch
if argv[:1] != ["run"]:
    fail("only `run` is used by fnrelay")
VALUED = {{"-v", "--volume", "-w", "--workdir", "-e", "--env", "--device", "--gpus", "--user",
          "-u", "--network", "--ipc", "--userns"}}
i, cwd, names = 1, None, []
while i < len(argv) and argv[i].startswith("-"):
    flag, _, inline = argv[i].partition("=")
    if flag in VALUED and not inline:
        value, i = argv[i + 1], i + 2
    else:
        value, i = inline, i + 1
    if flag in ("-w", "--workdir"):
        cwd = value
    elif flag in ("-e", "--env"):
        names.append(value)
    elif flag in ("-v", "--volume") and not os.path.exists(value.split(":")[0]):
        fail("volume source does not exist: " + value)
if i >= len(argv) or argv[i] not in IMAGES:
    fail("unknown image " + repr(argv[i:i + 1]))
# A container does not inherit the host's environment: only what -e passes (podman-run(1):
# NAME takes the host's value if set; NAME ending in * takes every host variable with that
# prefix).
env = {{"HOME": "/root", "PATH": "/usr/bin:/bin"}}
for name in names:
    if "=" in name:
        key, _, val = name.partition("=")
        env[key] = val
    else:
        env.update({{k: v for k, v in os.environ.items() if fnmatch.fnmatchcase(k, name)}})
run_in(IMAGES[argv[i]], argv[i + 1:], env=env, cwd=cwd)
'''


def install_standins(bin_dir: Path, log: Path, envs: dict[str, Path],
                     images: dict[str, Path]) -> Path:
    """Write conda, micromamba, apptainer and podman stand-ins into `bin_dir`."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    fmt = {"python": sys.executable, "log": str(log),
           "envs": {k: str(v) for k, v in envs.items()},
           "images": {k: str(v) for k, v in images.items()}}
    for tool, body in (("conda", _CONDA), ("micromamba", _CONDA), ("apptainer", _APPTAINER),
                       ("podman", _PODMAN)):
        path = bin_dir / tool
        path.write_text((_COMMON + body).format(tool=tool, **fmt))
        path.chmod(0o755)
    return bin_dir


def calls(log: Path) -> list[list[str]]:
    """Every recorded call, in order."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def standin_tools(root: Path) -> dict[str, Path]:
    """An env named "sim", an image (/images/sim.sif, ghcr.io/org/sim:1) and the stand-ins."""
    env, image = make_venv(root / "envs" / "sim"), make_venv(root / "image")
    log = root / "calls.jsonl"
    bin_dir = install_standins(root / "bin", log, {"sim": env},
                               {"/images/sim.sif": image, "ghcr.io/org/sim:1": image})
    return {"env": env, "image": image, "log": log, "bin": bin_dir}
