"""Python environments made on demand with uv from the endpoint's configured interpreters.

A task's worker needs fnrelay and dill under the task's Python version, and perhaps the
packages its submitter declares (``user_endpoint_config: {python_packages: [...]}``, only
where the admin allows it). Each environment is made once, from the interpreter of its version,
named after a hash of everything it holds (so a change of any of it makes a new one and never
alters one a worker is using), and kept under the endpoint's directory for later tasks and
restarts. uv never downloads an interpreter (``UV_PYTHON_DOWNLOADS=never``): compute nodes
rarely reach the internet, and a downloaded Python is not the one the admin vetted. Packages
come from the index, or the find-links locations, the admin configures.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path
from typing import Any

from fnrelay_endpoint.config import validators as check
from fnrelay_endpoint.engines.interpreters import Interpreter, Interpreters, probe

log = logging.getLogger(__name__)

KEY = "python_environments"
#: The user_endpoint_config key naming a task's extra requirements.
PACKAGES_KEY = "python_packages"
SETTINGS_KEYS = frozenset({"directory", "fnrelay", "index_url", "find_links",
                           "allow_packages", "timeout"})
DEFAULT_DIRECTORY = "python_envs"
#: Seconds one environment may take to build (resolving and installing from the index).
DEFAULT_TIMEOUT = 900.0
#: A requirement, as pip reads one: a name, extras, a version specifier; no options, no URLs
#: (``--index-url`` in a task's list would pick the index for the whole environment).
_REQUIREMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?"
                          r"\s*([<>=!~]=?\s*[A-Za-z0-9.*+!_-]+\s*,?\s*)*$")
_READY = ".fnrelay-env.json"


class PythonEnvironmentError(RuntimeError):
    """An environment could not be made (uv's own message says why)."""


@dataclass(frozen=True)
class EnvSettings:
    """``engine.python_environments``: where and from what environments are made."""

    directory: str = DEFAULT_DIRECTORY
    #: What to install fnrelay from: a requirement ("fnrelay==0.1.0") or a path (a wheel, a
    #: source tree); by default this endpoint's own version from the index.
    fnrelay: str = ""
    index_url: str | None = None
    find_links: tuple[str, ...] = ()
    allow_packages: bool = False
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def validate(cls, value: Any, source: str) -> dict[str, Any] | None:
        """The mapping checked and normalized (JSON-safe, as engine configs are), or None."""
        if value is None:
            return None
        key = f"engine.{KEY}"
        if not isinstance(value, Mapping):
            raise check.refuse(source, key, "must be a mapping (directory, fnrelay, index_url, "
                               "find_links, allow_packages, timeout)", value)
        check.known_keys(value, SETTINGS_KEYS, source, f"{key}.")
        for text in ("directory", "fnrelay", "index_url"):
            item = value.get(text)
            if item is not None and (not isinstance(item, str) or not item.strip()):
                raise check.refuse(source, f"{key}.{text}", "must be a non-empty string", item)
        links = value.get("find_links") or []
        if not isinstance(links, list) or not all(isinstance(x, str) and x for x in links):
            raise check.refuse(source, f"{key}.find_links", "must be a list of paths or URLs",
                               links)
        allow = value.get("allow_packages", False)
        if not isinstance(allow, bool):
            raise check.refuse(source, f"{key}.allow_packages", "must be true or false", allow)
        timeout = check.seconds(value.get("timeout", DEFAULT_TIMEOUT), f"{key}.timeout", source)
        return asdict(cls(directory=value.get("directory") or DEFAULT_DIRECTORY,
                          fnrelay=value.get("fnrelay") or "", index_url=value.get("index_url"),
                          find_links=tuple(links), allow_packages=allow, timeout=timeout))

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> EnvSettings:
        return cls(**{**data, "find_links": tuple(data.get("find_links") or ())})


def task_packages(config: Mapping[str, Any] | None) -> list[str]:
    """The requirements a task declares (sorted, deduplicated); ValueError for a bad list."""
    value = (config or {}).get(PACKAGES_KEY)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise ValueError(f"user_endpoint_config {PACKAGES_KEY!r} must be a list of "
                         "requirements such as \"numpy>=1.26\"")
    bad = next((x for x in value if not _REQUIREMENT.match(x.strip())), None)
    if bad is not None:
        raise ValueError(f"user_endpoint_config {PACKAGES_KEY!r}: {bad!r} is not a requirement "
                         "(a name with an optional version, e.g. \"numpy>=1.26\")")
    return sorted({x.strip() for x in value})


@dataclass(frozen=True)
class EnvSpec:
    """What one environment holds; its hash names it."""

    base: Interpreter
    fnrelay: str
    index_url: str | None
    find_links: tuple[str, ...]
    packages: tuple[str, ...] = field(default_factory=tuple)

    def digest(self) -> str:
        data = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(data).hexdigest()[:16]

    def name(self) -> str:
        return f"py{self.base.version}-{self.digest()}"


def _own_version() -> str:
    """This endpoint's fnrelay version (an environment's default fnrelay)."""
    try:
        return version("fnrelay")
    except PackageNotFoundError:  # a source tree that is not installed
        return "0.1.0"


def _uv() -> str:
    """The uv executable: the one the `uv` package installed with the endpoint, else PATH's."""
    try:
        from uv import find_uv_bin  # type: ignore[import-not-found,unused-ignore]

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found is None:
            raise PythonEnvironmentError("uv is not installed (pip install uv, or "
                                         "fnrelay[endpoint]): environments cannot be made"
                                         ) from None
        return found


class Environments:
    """Makes and caches environments; concurrent requests for one wait for a single build."""

    def __init__(self, settings: EnvSettings, workdir: Path):
        self.settings = settings
        root = Path(settings.directory).expanduser()
        self.root = (root if root.is_absolute() else Path(workdir) / root).absolute()
        self._lock = threading.Lock()
        self._building: dict[str, threading.Lock] = {}
        self._ready: dict[str, Interpreter] = {}

    def spec(self, base: Interpreter, packages: list[str]) -> EnvSpec:
        s = self.settings
        return EnvSpec(base, s.fnrelay or f"fnrelay=={_own_version()}", s.index_url,
                       s.find_links, tuple(packages))

    def ready(self, spec: EnvSpec) -> Interpreter | None:
        """The environment's interpreter if it is made (no waiting)."""
        return self._ready.get(spec.name())

    def ensure(self, spec: EnvSpec) -> Interpreter:
        """The environment's interpreter, made first if needed (blocks; one build per
        environment however many tasks wait). PythonEnvironmentError with uv's message."""
        name = spec.name()
        with self._lock:
            if name in self._ready:
                return self._ready[name]
            build_lock = self._building.setdefault(name, threading.Lock())
        with build_lock:  # the first caller builds; the others wait here, then find it made
            if name in self._ready:
                return self._ready[name]
            found = self._load(spec) or self._build_or_clean(spec)
            with self._lock:
                self._ready[name] = found
            return found

    def _python(self, name: str) -> Path:
        return self.root / name / "bin" / "python"

    def _load(self, spec: EnvSpec) -> Interpreter | None:
        """An environment made before (by an earlier run of the endpoint), if complete."""
        marker = self.root / spec.name() / _READY
        try:
            full = json.loads(marker.read_text())["python_version"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return Interpreter(str(self._python(spec.name())), str(full))

    def _build_or_clean(self, spec: EnvSpec) -> Interpreter:
        """Build; a failed build leaves no half-made directory behind."""
        try:
            return self._build(spec)
        except BaseException:
            shutil.rmtree(self.root / f".{spec.name()}.building", ignore_errors=True)
            raise

    def _build(self, spec: EnvSpec) -> Interpreter:
        name = spec.name()
        final = self.root / name
        tmp = self.root / f".{name}.building"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)  # an incomplete one (no marker)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        log.info("making Python environment %s from %s (%s)", name, spec.base.path,
                 ", ".join([spec.fnrelay, *spec.packages]))
        uv = _uv()
        python = str(tmp / "bin" / "python")
        sources = self._sources(spec)
        self._run([uv, "venv", "--relocatable", "--python", spec.base.path, str(tmp)])
        # fnrelay without its dependencies: a worker imports only its wire and serialization
        # modules, which need dill alone (the HTTP and AMQP clients stay out).
        self._run([uv, "pip", "install", "--python", python, "--no-deps", *sources,
                   spec.fnrelay])
        self._run([uv, "pip", "install", "--python", python, *sources, "dill",
                   *spec.packages])
        full = probe(python)
        (tmp / _READY).write_text(json.dumps({**asdict(spec), "python_version": full}))
        os.replace(tmp, final)
        return Interpreter(str(self._python(name)), full)

    @staticmethod
    def _sources(spec: EnvSpec) -> list[str]:
        args = [] if spec.index_url is None else ["--index-url", spec.index_url]
        if spec.find_links and spec.index_url is None:
            args.append("--no-index")  # find-links alone: nothing from the internet
        for link in spec.find_links:
            args += ["--find-links", link]
        return args

    def _run(self, cmd: list[str]) -> None:
        env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}
        env.pop("VIRTUAL_ENV", None)  # uv would install there rather than in --python's
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, env=env,
                                  timeout=self.settings.timeout, check=False)
        except subprocess.TimeoutExpired:
            raise PythonEnvironmentError(f"`{' '.join(cmd[1:3])}` took more than "
                                    f"{self.settings.timeout:g} s") from None
        except OSError as e:
            raise PythonEnvironmentError(f"cannot run uv: {e}") from None
        if done.returncode != 0:
            message = (done.stderr or done.stdout).strip()
            raise PythonEnvironmentError(f"uv {' '.join(cmd[1:3])} failed: {message}")


def own_base() -> Interpreter:
    """The endpoint's interpreter as the base of its own version's environments: its base
    Python, not a venv's (uv makes a venv from a base)."""
    return Interpreter(getattr(sys, "_base_executable", sys.executable),
                       ".".join(map(str, sys.version_info[:3])))


def refuse_packages(settings: EnvSettings | None) -> str | None:
    """Why a task's declared packages are refused here, or None."""
    if settings is None:
        return (f"user_endpoint_config {PACKAGES_KEY!r}: this endpoint makes no Python "
                "environments (its admin sets engine.python_environments)")
    if not settings.allow_packages:
        return (f"user_endpoint_config {PACKAGES_KEY!r}: this endpoint does not install "
                "packages for tasks (its admin allows it with "
                "engine.python_environments.allow_packages)")
    return None



#: The exception type of a task whose Python environment could not be made.
ENVIRONMENT_ERROR_TYPE = "fnrelay_endpoint.PythonEnvironmentError"


def globus_requirement() -> str:
    """Globus Compute's SDK as fnrelay's `globus-compute` extra pins it (its one source)."""
    try:
        found = [r.split(";")[0].strip() for r in requires("fnrelay") or []
                 if r.startswith("globus-compute-sdk") and "globus-compute" in r.split(";")[-1]]
    except PackageNotFoundError:
        found = []
    return found[0] if found else "globus-compute-sdk"


def place(task_version: str | None, user_endpoint_config: Mapping[str, Any] | None,
          versions: Interpreters, envs: Environments | None, globus: bool = False
          ) -> Interpreter | EnvSpec | None:
    """Where a task runs: the engine's default interpreter (None), another one, or an
    environment (made first, unless `envs` has it already). A Globus Compute task (`globus`)
    needs that SDK's serializers there too. ValueError: refused (packages declared where none
    are installed, or a malformed list)."""
    packages = task_packages(user_endpoint_config)
    if packages:
        why = refuse_packages(None if envs is None else envs.settings)
        if why is not None:
            raise ValueError(why)
    base = versions.for_version(task_version)
    own = base is versions.default
    if envs is None or (own and not packages):
        return None if own else base
    if globus and not own:  # the endpoint's own environment holds it if it takes such tasks
        packages = sorted({*packages, globus_requirement()})
    # uv makes a venv from a base interpreter: the endpoint's own may be a venv's.
    spec = envs.spec(own_base() if base.path == sys.executable else base, packages)
    return envs.ready(spec) or spec
