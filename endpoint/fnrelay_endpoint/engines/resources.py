"""The resource specification of one task: per-task values over the endpoint's defaults.

Every value ends up in a batch script or on a command line, so each key is checked by type and
pattern before anything is rendered: a partition is a name, never a newline or a ``;``. Keys
that hold shell or directive text by design (the FREE_TEXT_KEYS) belong to the endpoint's
admin: a task may set one only if the endpoint config lists it in its allowed free-text keys.

Layout keys (num_nodes, ranks_per_node, num_ranks) go together: when a task sets any of them,
the endpoint's defaults for the others are ignored and the missing ones derived, so
``{"num_ranks": 2}`` means two ranks on one node whatever the defaults say.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fnrelay.functions import parse_walltime as _parse_walltime
from fnrelay_wrappers.chain import LaunchChain, build_chain
from fnrelay_wrappers.conda import ENV_NAME_PATTERN, TOOLS
from fnrelay_wrappers.container import GPU_VENDORS, IMAGE_PATTERN, RUNTIMES, Bind, check_path
from fnrelay_wrappers.layout import Layout


class ResourceSpecificationError(ValueError):
    """A resource specification value was refused; the message names the key and the value."""


#: Keys whose values are shell or directive text: per task only if the endpoint allows them.
FREE_TEXT_KEYS = frozenset(
    {"scheduler_options", "launcher_options", "container.options", "modules", "pre_exec"}
)
LAYOUT_KEYS = ("num_nodes", "ranks_per_node", "num_ranks")
#: Upper bounds that catch typos (and absurd values) before a scheduler sees them.
INT_BOUNDS = {
    "num_nodes": (1, 100_000),
    "ranks_per_node": (1, 4096),
    "num_ranks": (1, 10_000_000),
    "cores_per_rank": (1, 4096),
    "gpus_per_node": (0, 64),
}
MAX_WALLTIME = 366 * 24 * 3600
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
#: Slurm constraints combine features with & | , and brackets; PBS-style lists use : and ,.
CONSTRAINT_PATTERN = re.compile(r"^[A-Za-z0-9_.,:&|*\[\]-]{1,256}$")
MEMORY_PATTERN = re.compile(r"^([1-9][0-9]{0,8})\s*([KMGT])B?$", re.IGNORECASE)
MODULE_PATTERN = re.compile(r"^[A-Za-z0-9_.+/@:-]{1,256}$")
#: HTCondor has no directives in scripts: fnrelay's own `#HTCONDOR` lines become submit
#: description commands (see engines/batch/schedulers/htcondor.py).
DIRECTIVE_PREFIX = {"slurm": "#SBATCH", "pbspro": "#PBS", "sge": "#$", "lsf": "#BSUB",
                    "flux": "#flux:", "htcondor": "#HTCONDOR"}
STRING_KEYS = ("partition", "queue", "account", "qos", "constraint", "reservation")
#: Site keys with a scheduler's own syntax, each checked by pattern so no free text is needed:
#: Slurm --gres (gpu:a100:2,nvme:1), --licenses (name[@server][:n]), --clusters, --signal
#: ([R|B:]SIG[@seconds]); PBS filesystems= (ALCF's home:eagle).
SITE_PATTERNS = {
    "gres": re.compile(r"^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+){0,2}"
                       r"(,[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+){0,2}){0,31}$"),
    "licenses": re.compile(r"^[A-Za-z0-9_.@-]+(:[0-9]{1,6})?(,[A-Za-z0-9_.@-]+(:[0-9]{1,6})?)"
                           r"{0,31}$"),
    "clusters": re.compile(r"^[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+){0,31}$"),
    "signal": re.compile(r"^((R|B|RB|BR):)?(SIG)?[A-Z0-9]{1,8}(@[0-9]{1,6})?$"),
    "filesystems": re.compile(r"^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+){0,31}$"),
}
#: PBS chunk resources fnrelay sets itself from the layout (a `chunk` key may not repeat them).
CHUNK_RESERVED = frozenset({"ncpus", "mpiprocs", "ngpus", "mem", "ompthreads"})
CHUNK_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
CHUNK_VALUE = re.compile(r"^[A-Za-z0-9_.+-]{1,128}$")
#: The interpreter inside a conda env or an image: a command name or an absolute path.
PYTHON_NAME = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")
KNOWN_KEYS = frozenset(
    {*INT_BOUNDS, "memory", "walltime", *STRING_KEYS, *SITE_PATTERNS, "chunk", "exclusive",
     "requeue", "login_shell", "env_python", "container", "conda", "scheduler_options",
     "launcher_options", "modules", "pre_exec"}
)
CONTAINER_KEYS = frozenset({"type", "image", "binds", "options", "gpu_vendor"})
CONDA_KEYS = frozenset({"env", "prefix", "tool"})


def _fail(key: str, value: Any, why: str) -> ResourceSpecificationError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ResourceSpecificationError(f"resource_specification {key!r}: {why} (got {shown})")


def parse_walltime(value: Any, key: str = "walltime") -> int:
    """Seconds from int seconds or "HH:MM:SS" (the SDK's parser), as a refusal naming `key`."""
    if value is None:
        raise _fail(key, value, "walltime must be seconds (int) or 'HH:MM:SS'")
    try:
        seconds = _parse_walltime(value)
    except ValueError as e:
        raise _fail(key, value, str(e)) from None
    if seconds > MAX_WALLTIME:
        raise _fail(key, value, f"walltime is longer than {MAX_WALLTIME} s")
    return seconds


def parse_memory(value: Any, key: str = "memory") -> str:
    """Normalized memory size "<n><K|M|G|T>" from e.g. "4G", "512mb"."""
    m = MEMORY_PATTERN.fullmatch(value) if isinstance(value, str) else None
    if not m:
        raise _fail(key, value, "memory must look like '4G' or '512M' (units K, M, G, T)")
    return f"{int(m.group(1))}{m.group(2).upper()}"


#: Memory units in 1024s, as Slurm's --mem and PBS's mem read them.
MEMORY_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def memory_bytes(value: Any, key: str = "memory") -> int:
    """Bytes of a memory size: `memory` is what the task may use on each of its nodes (the
    batch scheduler's per-node request; the local engine's one node enforces it)."""
    text = parse_memory(value, key)
    return int(text[:-1]) * MEMORY_UNITS[text[-1]]


def _int(key: str, value: Any) -> int:
    low, high = INT_BOUNDS[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(key, value, f"must be an int from {low} to {high}")
    return value


def _string(key: str, value: Any) -> str:
    pattern = CONSTRAINT_PATTERN if key == "constraint" else NAME_PATTERN
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise _fail(key, value, f"must match {pattern.pattern}")
    return value


def _site(key: str, value: Any) -> str:
    pattern = SITE_PATTERNS[key]
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise _fail(key, value, f"must match {pattern.pattern}")
    return value


def _chunk(key: str, value: Any) -> dict[str, str]:
    """PBS chunk resources beyond the layout's, e.g. ``{"system": "polaris"}``."""
    if not isinstance(value, Mapping):
        raise _fail(key, value, "must be a mapping of PBS chunk resources, e.g. "
                    "{system: polaris}")
    out = {}
    for name, item in value.items():
        if not isinstance(name, str) or not CHUNK_NAME.fullmatch(name):
            raise _fail(f"{key}.{name}", name, f"a resource name must match {CHUNK_NAME.pattern}")
        if name in CHUNK_RESERVED:
            raise _fail(f"{key}.{name}", item, "is set from the task's layout; use the "
                        "layout keys (cores_per_rank, gpus_per_node, memory...)")
        text = str(item).lower() if isinstance(item, bool) else str(item)
        if not isinstance(item, (str, int)) or not CHUNK_VALUE.fullmatch(text):
            raise _fail(f"{key}.{name}", item, f"a value must match {CHUNK_VALUE.pattern}")
        out[name] = text
    return out


def _python(key: str, value: Any) -> str:
    if isinstance(value, str) and PYTHON_NAME.fullmatch(value):
        return value
    try:
        return check_path(value)
    except ValueError:
        raise _fail(key, value, "must be a command name such as 'python3' or an absolute "
                    "path") from None


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(key, value, "must be true or false")
    return value


def _lines(key: str, value: Any) -> list[str]:
    """A list of one-line strings from a list (or a string of lines)."""
    if isinstance(value, str):
        value = value.splitlines()
    if not isinstance(value, (list, tuple)):
        raise _fail(key, value, "must be a list of strings")
    lines = []
    for line in value:
        if not isinstance(line, str) or "\n" in line or "\r" in line or "\x00" in line:
            raise _fail(key, line, "each entry must be one line of text")
        if line.strip():
            lines.append(line)
    return lines


def _options(key: str, value: Any) -> str | list[str]:
    """Launcher or container options: a one-line string or a list of tokens."""
    if isinstance(value, str):
        if "\n" in value or "\r" in value or "\x00" in value:
            raise _fail(key, value, "must be one line")
        return value
    return _lines(key, value)


def _modules(key: str, value: Any) -> list[str]:
    names = _lines(key, value)
    for name in names:
        if not MODULE_PATTERN.fullmatch(name.strip()):
            raise _fail(key, name, f"a module name must match {MODULE_PATTERN.pattern}")
    return [n.strip() for n in names]


def _container(key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(key, value, "must be a mapping {type, image, binds}")
    unknown = set(value) - CONTAINER_KEYS
    if unknown:
        raise _fail(f"{key}.{sorted(unknown)[0]}", value, "unknown container key")
    runtime = value.get("type")
    if runtime not in RUNTIMES:
        raise _fail(f"{key}.type", runtime, f"must be one of {', '.join(RUNTIMES)}")
    image = value.get("image")
    if not isinstance(image, str) or len(image) > 512 or not IMAGE_PATTERN.fullmatch(image):
        raise _fail(f"{key}.image", image, "must be an image path or reference")
    binds = value.get("binds", [])
    if not isinstance(binds, (list, tuple)):
        raise _fail(f"{key}.binds", binds, "must be a list of paths")
    for b in binds:
        try:
            Bind.parse(b)
        except ValueError:
            raise _fail(f"{key}.binds", b, "a bind is '/src', '/src:/dst' or '/src:/dst:ro' "
                        "with plain absolute paths") from None
    result: dict[str, Any] = {"type": runtime, "image": image, "binds": list(binds)}
    if "options" in value:
        result["options"] = _options(f"{key}.options", value["options"])
    if "gpu_vendor" in value:
        if value["gpu_vendor"] not in GPU_VENDORS:
            raise _fail(f"{key}.gpu_vendor", value["gpu_vendor"],
                        f"must be one of {', '.join(GPU_VENDORS)}")
        result["gpu_vendor"] = value["gpu_vendor"]
    return result


def _conda(key: str, value: Any) -> dict[str, str]:
    where = {k: v for k, v in value.items() if k != "tool"} if isinstance(value, Mapping) else {}
    if not isinstance(value, Mapping) or len(where) > 1 or not set(value) <= CONDA_KEYS \
            or not (where or "tool" in value):
        raise _fail(key, value, "must be {'env': name} or {'prefix': '/abs/path'}, "
                    "with an optional 'tool' (conda or micromamba; alone, the site's tool)")
    out = {}
    if "tool" in value:
        if value["tool"] not in TOOLS:
            raise _fail(f"{key}.tool", value["tool"], f"must be one of {', '.join(TOOLS)}")
        out["tool"] = value["tool"]
    if not where:
        return out
    if "env" in value:
        name = value["env"]
        if not isinstance(name, str) or not ENV_NAME_PATTERN.fullmatch(name):
            raise _fail(f"{key}.env", name, f"must match {ENV_NAME_PATTERN.pattern}")
        return {**out, "env": name}
    try:
        return {**out, "prefix": check_path(value["prefix"])}
    except ValueError:
        raise _fail(f"{key}.prefix", value["prefix"], "must be a plain absolute path") from None


def _merge_container(base: dict[str, Any], task: dict[str, Any]) -> dict[str, Any]:
    """A task's container over the admin's: the admin's binds stay (site file systems), the
    admin's options only while the runtime is the same (they are that runtime's flags)."""
    merged = {**base, **task}
    merged["binds"] = list(dict.fromkeys([*base.get("binds", []), *task.get("binds", [])]))
    if task["type"] != base["type"] and "options" not in task:
        merged.pop("options", None)
    return merged


def _merge_conda(base: dict[str, str], task: dict[str, str]) -> dict[str, str]:
    """A task's env over the admin's; the admin's tool (conda or micromamba) stays."""
    if "env" in task or "prefix" in task:
        base = {k: v for k, v in base.items() if k == "tool"}
    return {**base, **task}


_CHECKS = {
    **{k: _int for k in INT_BOUNDS},
    **{k: _string for k in STRING_KEYS},
    **{k: _site for k in SITE_PATTERNS},
    "chunk": _chunk,
    "requeue": _bool,
    "login_shell": _bool,
    "env_python": _python,
    "memory": lambda k, v: parse_memory(v, k),
    "walltime": lambda k, v: parse_walltime(v, k),
    "exclusive": _bool,
    "container": _container,
    "conda": _conda,
    "scheduler_options": _lines,
    "launcher_options": _options,
    "modules": _modules,
    "pre_exec": _lines,
}


def _validated(spec: Any, what: str) -> dict[str, Any]:
    """Each key of `spec` checked and normalized; None values mean 'not set'."""
    if spec is None:
        return {}
    if not isinstance(spec, Mapping):
        raise ResourceSpecificationError(f"{what} must be a mapping, not {type(spec).__name__}")
    out = {}
    for key, value in spec.items():
        if key not in KNOWN_KEYS:
            raise _fail(str(key), value, f"unknown key (known: {', '.join(sorted(KNOWN_KEYS))})")
        if value is not None:
            out[key] = _CHECKS[key](key, value)
    return out


def _free_text_used(task: Mapping[str, Any], raw: Any) -> list[str]:
    keys = [k for k in FREE_TEXT_KEYS if "." not in k and k in task]
    if "container" in task and isinstance(raw.get("container"), Mapping) \
            and "options" in raw["container"]:
        keys.append("container.options")
    return sorted(keys)


def _derive_layout(values: dict[str, Any]) -> tuple[int, int, int]:
    nodes: int | None = values.get("num_nodes")
    ppn: int | None = values.get("ranks_per_node")
    ranks: int | None = values.get("num_ranks")
    if ranks is None:
        nodes, ppn = nodes or 1, ppn or 1
        ranks = nodes * ppn
    elif nodes is None:
        nodes = 1 if ppn is None else math.ceil(ranks / ppn)
        ppn = ranks if ppn is None else ppn
    elif ppn is None:
        ppn = math.ceil(ranks / nodes)
    if ranks > nodes * ppn or ranks < nodes:
        raise _fail("num_ranks", ranks,
                    f"does not fit num_nodes={nodes} x ranks_per_node={ppn} "
                    "(need num_nodes <= num_ranks <= num_nodes * ranks_per_node)")
    for key, value in (("num_nodes", nodes), ("ranks_per_node", ppn), ("num_ranks", ranks)):
        _int(key, value)
    return nodes, ppn, ranks


@dataclass(frozen=True)
class ResourceSpecification:
    """A validated, merged resource specification (see module docstring)."""

    num_nodes: int = 1
    ranks_per_node: int = 1
    num_ranks: int = 1
    cores_per_rank: int | None = None
    gpus_per_node: int | None = None
    memory: str | None = None
    walltime: int | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    exclusive: bool = False
    reservation: str | None = None
    gres: str | None = None
    licenses: str | None = None
    clusters: str | None = None
    signal: str | None = None
    filesystems: str | None = None
    chunk: dict[str, str] = field(default_factory=dict)
    #: Let the scheduler requeue the job itself after a node failure or preemption. Off, the
    #: job fails and the agent retries the task as a new job (its own sandbox and job id).
    requeue: bool = False
    login_shell: bool = False
    env_python: str | None = None
    container: dict[str, Any] | None = None
    conda: dict[str, str] | None = None
    scheduler_options: list[str] = field(default_factory=list)
    launcher_options: str | list[str] | None = None
    modules: list[str] = field(default_factory=list)
    pre_exec: list[str] = field(default_factory=list)

    @classmethod
    def from_task(cls, spec: Mapping[str, Any] | None, defaults: Mapping[str, Any] | None = None,
                  allowed_free_text: set[str] | frozenset[str] = frozenset(),
                  scheduler: str | None = None) -> ResourceSpecification:
        """Merge the task's `spec` over the endpoint's `defaults`, refusing what is not allowed.

        `allowed_free_text` lists the FREE_TEXT_KEYS a task may set. With `scheduler`
        ("slurm" or "pbspro"), scheduler_options lines are checked for its directive prefix
        now (render time checks them anyway).
        """
        unknown_allowed = set(allowed_free_text) - FREE_TEXT_KEYS
        if unknown_allowed:
            raise ResourceSpecificationError(
                f"allowed free-text keys {sorted(unknown_allowed)} are not free-text keys "
                f"(known: {', '.join(sorted(FREE_TEXT_KEYS))})")
        base = _validated(defaults, "endpoint resource defaults")
        task = _validated(spec, "resource_specification")
        for key in _free_text_used(task, spec or {}):
            if key not in allowed_free_text:
                raise ResourceSpecificationError(
                    f"resource_specification {key!r}: free text is set by the endpoint's "
                    "admin; this endpoint does not allow it per task")
        for src in (base, task):
            if "queue" in src:
                queue = src.pop("queue")
                if src.setdefault("partition", queue) != queue:
                    raise _fail("queue", queue, "differs from partition (they are one setting)")
        if any(k in task for k in LAYOUT_KEYS):
            for k in LAYOUT_KEYS:
                base.pop(k, None)
        merged = {**base, **task}
        if "container" in task and "container" in base:
            merged["container"] = _merge_container(base["container"], task["container"])
        if "conda" in task and "conda" in base:
            merged["conda"] = _merge_conda(base["conda"], task["conda"])
        if "conda" in merged and not {"env", "prefix"} & set(merged["conda"]):
            del merged["conda"]  # the admin named the site's tool only; no task env to use
        merged["num_nodes"], merged["ranks_per_node"], merged["num_ranks"] = \
            _derive_layout(merged)
        result = cls(**merged)
        if scheduler is not None:
            result.directives(scheduler)
        return result

    def layout(self) -> Layout:
        return Layout(self.num_nodes, self.ranks_per_node, self.num_ranks,
                      self.cores_per_rank, self.gpus_per_node)

    def directives(self, scheduler: str) -> list[str]:
        """The scheduler_options lines, each checked to be a directive of `scheduler`."""
        try:
            prefix = DIRECTIVE_PREFIX[scheduler]
        except KeyError:
            raise ResourceSpecificationError(
                f"unknown scheduler {scheduler!r} (known: {', '.join(DIRECTIVE_PREFIX)})"
            ) from None
        for line in self.scheduler_options:
            if not line.startswith(prefix + " ") or "\n" in line or "\r" in line:
                raise _fail("scheduler_options", line,
                            f"each line must start with '{prefix} ' and be one line")
        return list(self.scheduler_options)

    def launch_chain(self, sandbox: str, launcher: str | None = None,
                     launcher_settings: dict | None = None) -> LaunchChain:
        """The wrapper chain for this task; `launcher` and its settings come from the config."""
        return build_chain(
            sandbox, self.layout(), launcher=launcher, launcher_options=self.launcher_options,
            launcher_settings=launcher_settings, container=self.container, conda=self.conda,
            modules=self.modules, pre_exec=self.pre_exec, python=self.env_python)

