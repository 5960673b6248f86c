"""What the daemons may take from the SDK package, and that the local stack stays out of them.

The broker, the endpoint and the wrappers share the `fnrelay` package with SDK users, but only
the wire and a few shared utilities, named in SDK_MODULES_FOR_DAEMONS below. The local stack
(`fnrelay.devstack`: RabbitMQ supervision, /proc scans, chown) is a developer's tool: neither
`import fnrelay` nor any daemon module may load it.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SDK = ROOT / "sdk" / "fnrelay"
DAEMON_PACKAGES = {
    "fnrelay_broker": ROOT / "broker" / "fnrelay_broker",
    "fnrelay_endpoint": ROOT / "endpoint" / "fnrelay_endpoint",
    "fnrelay_wrappers": ROOT / "wrappers" / "fnrelay_wrappers",
}
#: Runs only under alembic (it reads alembic's context at import).
NOT_IMPORTABLE = {"fnrelay_broker.migrations.env"}

#: The SDK modules (fnrelay.<name>, with their submodules) the daemons import, and why.
SDK_MODULES_FOR_DAEMONS = {
    "wire": "every message and record on the wire, its decoder and shared names",
    "errors": "one exception hierarchy: a broker or endpoint error reads the same in the SDK",
    "config": "FNRELAY_HOME, 0600 files and 0700 directories, shared environment names",
    "amqp": "the AMQP connection settings (TLS, CA bundle) and dead-letter queues both sides "
            "declare alike",
    "serialize": "the payload tags the batch engine must recognise to run a function",
    "functions": "walltime parsing, as ShellFunction/MPIFunction read it",
    "blobs": "references to large payloads kept outside the messages",
    "droplog": "one WARNING per interval for dropped messages, however many arrive",
    "backoff": "the one jittered backoff for reconnects and retries",
    "chunks": "the one helper that splits work into batches",
    "processes": "pid_alive: whether a process (an endpoint, an agent) still runs",
    "token_input": "one way to take a token (stdin, a 0600 file, the prompt) for every login "
                   "command",
    "logformat": "one log format (text or JSON lines with task and endpoint ids) for every "
                 "daemon",
}


def _module_files(package: str, folder: Path) -> dict[str, Path]:
    """Every module of a daemon package, by dotted name."""
    found = {}
    for path in sorted(folder.rglob("*.py")):
        parts = path.relative_to(folder).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join((package, *parts))] = path
    return found


def _daemon_modules() -> dict[str, Path]:
    return {name: path for package, folder in DAEMON_PACKAGES.items()
            for name, path in _module_files(package, folder).items()}


def _sdk_modules_imported(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, name) of each fnrelay.<name> a module imports; "fnrelay" for its public API."""
    def top(dotted: str) -> str | None:
        parts = dotted.split(".")
        if parts[0] != "fnrelay":
            return None
        return parts[1] if len(parts) > 1 else "fnrelay"

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, t) for a in node.names if (t := top(a.name))]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module != "fnrelay":
                if t := top(node.module):
                    found.append((node.lineno, t))
                continue
            for alias in node.names:  # `from fnrelay import wire` names a module, `Executor` not
                is_module = (SDK / f"{alias.name}.py").exists() or (SDK / alias.name).is_dir()
                found.append((node.lineno, alias.name if is_module else "fnrelay"))
    return found


IMPORT_ALL = r"""
import importlib, json, sys
import fnrelay
for name in fnrelay.__all__:  # the lazy public names, as an SDK user touches them
    getattr(fnrelay, name)
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
print(json.dumps(sorted(m for m in sys.modules if m.startswith("fnrelay."))))
"""


def test_importing_the_sdk_and_every_daemon_module_loads_no_part_of_the_local_stack():
    names = sorted(set(_daemon_modules()) - NOT_IMPORTABLE)
    paths = [str(ROOT / d) for d in ("sdk", "broker", "endpoint", "wrappers")]
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", IMPORT_ALL, json.dumps(names)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=240)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout)
    assert "fnrelay.wire" in loaded and len(names) > 50, (names, loaded)
    assert [m for m in loaded if m == "fnrelay.devstack" or m.startswith("fnrelay.devstack.")
            ] == []


def test_daemons_import_from_the_sdk_package_only_the_modules_listed_here():
    used: dict[str, list[str]] = {}
    for path in _daemon_modules().values():
        tree = ast.parse(path.read_text(), str(path))
        for line, module in _sdk_modules_imported(tree):
            used.setdefault(module, []).append(f"{path.relative_to(ROOT)}:{line}")
    unlisted = {m: where for m, where in used.items() if m not in SDK_MODULES_FOR_DAEMONS}
    assert unlisted == {}, ("a daemon imports an SDK module the contract does not list; "
                            "list it with the reason, or take what it needs from a listed one")
    unused = sorted(set(SDK_MODULES_FOR_DAEMONS) - set(used))
    assert unused == [], "no daemon imports these any more: drop them from the list"
