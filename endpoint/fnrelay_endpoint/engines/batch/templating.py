"""Rendering per-task batch scripts from Jinja2 templates.

The environment is sandboxed (a site's own template cannot reach Python internals) and strict
(a misspelt variable is an error, not an empty string). Autoescape is off because the output is
a shell script, not HTML: values get the `shquote` filter in the script body and the `directive`
filter in ``#SBATCH``/``#PBS`` lines, which are parsed by the scheduler, not by the shell, and so
are refused rather than quoted when they hold whitespace, quotes or control characters.
"""

from __future__ import annotations

import functools
import importlib.resources
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jinja2 import FunctionLoader, StrictUndefined, Template, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from fnrelay.wire.names import EXIT_STATUS_FILE
from fnrelay_endpoint.engines.batch.sandbox import STDERR_FILE, STDOUT_FILE
from fnrelay_endpoint.engines.batch.schedulers.support import unsupported_key
from fnrelay_endpoint.engines.resources import (
    DIRECTIVE_PREFIX,
    ResourceSpecification,
    ResourceSpecificationError,
)
from fnrelay_wrappers.chain import LaunchChain
from fnrelay_wrappers.container import check_path
from fnrelay_wrappers.shell import check_env_name

#: The packaged job-script templates: package data of the batch engine, beside this module.
TEMPLATE_PACKAGE, TEMPLATE_DIR = "fnrelay_endpoint.engines.batch", "templates"
SCHEDULERS = tuple(DIRECTIVE_PREFIX)
_UNSAFE_DIRECTIVE = re.compile(r"[\s'\"\\`\x00-\x1f\x7f]")


class TemplateRenderError(ValueError):
    """A batch script could not be rendered (bad template or a refused value)."""


def job_name(task_id: str, attempt: int = 1) -> str:
    """The scheduler job name of one attempt (plain characters: PBS and SGE restrict names)."""
    return f"fnrelay-{task_id}" if attempt <= 1 else f"fnrelay-{task_id}-attempt{attempt}"


def shquote(value: Any) -> str:
    """Shell-quote a value for the script body."""
    if value is None:
        raise TemplateRenderError("shquote got None: the template used a value that is not set")
    return shlex.quote(str(value))


def directive(value: Any) -> str:
    """A value for a scheduler directive line, refused if it could split or end the line."""
    text = str(value)
    if value is None or not text or _UNSAFE_DIRECTIVE.search(text):
        raise TemplateRenderError(f"value {text[:80]!r} cannot go into a scheduler directive")
    return text


def envname(value: Any) -> str:
    """An environment variable name, refused unless it is one."""
    try:
        return check_env_name(value)
    except ValueError as e:
        raise TemplateRenderError(str(e)) from None


def _packaged(name: str) -> str | None:
    resource = importlib.resources.files(TEMPLATE_PACKAGE) / TEMPLATE_DIR / name
    return resource.read_text() if resource.is_file() else None


def make_environment() -> SandboxedEnvironment:
    """Strict, sandboxed, no autoescape; ``{% include %}`` finds the packaged templates."""
    env = SandboxedEnvironment(
        loader=FunctionLoader(_packaged), undefined=StrictUndefined, autoescape=False,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )
    env.filters.update(shquote=shquote, directive=directive, envname=envname)
    return env


@functools.lru_cache(maxsize=16)
def _compiled(text: str) -> Template:
    """Compiling costs tens of milliseconds, rendering a fraction: a burst of 1,000 tasks
    compiles its template once. Keyed by the text, so an edited site template applies."""
    return make_environment().from_string(text)


def load_template_text(scheduler: str, template_path: str | Path | None = None) -> str:
    """A site's own template file, or the packaged ``<scheduler>.sh.j2``."""
    if template_path is not None:
        return Path(template_path).read_text()
    if scheduler not in SCHEDULERS:
        raise TemplateRenderError(f"unknown scheduler {scheduler!r} (known: {SCHEDULERS})")
    return _packaged(f"{scheduler}.sh.j2") or ""


def render_batch_script(scheduler: str, context: Mapping[str, Any],
                        template_path: str | Path | None = None) -> str:
    """Render the batch script for `scheduler` ("slurm" | "pbspro") from `context`.

    `context` is what `batch_context` builds; a site template may use any of its keys.
    """
    text = load_template_text(scheduler, template_path)
    try:
        return _compiled(text).render(**context)
    except TemplateRenderError:
        raise
    except TemplateError as e:
        raise TemplateRenderError(f"batch script template for {scheduler}: {e}") from e


def slurm_minutes(seconds: int) -> int:
    """Slurm walltimes are whole minutes: round up, so a task never gets less than asked."""
    return max(1, math.ceil(seconds / 60))


def hms(seconds: int) -> str:
    """``HH:MM:SS`` (hours may exceed 24), as PBS ``-l walltime`` takes it."""
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def pbs_memory(memory: str) -> str:
    """PBS sizes are lower-case with a ``b``: "4G" -> "4gb"."""
    return memory[:-1] + memory[-1].lower() + "b"


def check_sandbox(sandbox: str) -> str:
    """A plain absolute path without ``%``, which sbatch expands in --output (%j, %u...)."""
    try:
        check_path(sandbox)
    except ValueError as e:
        raise TemplateRenderError(f"task sandbox: {e}") from None
    if "%" in sandbox:
        raise TemplateRenderError(
            f"task sandbox {sandbox!r}: '%' is not allowed in the endpoint's work directory "
            "(Slurm expands it in --output and --error, e.g. %j to the job id)")
    return sandbox


def pbs_licenses(licenses: str) -> list[str]:
    """Slurm-style ``name[:count],...`` as PBS server resources ``name=count``."""
    out = []
    for item in licenses.split(","):
        name, _, count = item.partition(":")
        if "@" in name:
            raise ResourceSpecificationError(
                f"resource_specification 'licenses': {item!r} names a license server "
                "(name@server), which PBSPro does not have")
        out.append(f"{name}={count or 1}")
    return out


def _site_keys(scheduler: str, spec: ResourceSpecification) -> dict[str, Any]:
    """The typed site keys, in the form the scheduler's template writes them."""
    if scheduler == "pbspro" and spec.reservation and spec.partition:
        raise ResourceSpecificationError(
            "resource_specification 'reservation': a PBS reservation is its queue "
            f"({spec.reservation}); leave 'partition'/'queue' unset")
    chunk = [f"{k}={v}" for k, v in spec.chunk.items()]
    if scheduler == "pbspro" and spec.cores_per_rank:
        chunk.insert(0, f"ompthreads={spec.cores_per_rank}")
    return {
        "reservation": spec.reservation, "gres": spec.gres, "clusters": spec.clusters,
        "signal": spec.signal, "filesystems": spec.filesystems, "chunk": chunk,
        "requeue": spec.requeue,
        "licenses": (pbs_licenses(spec.licenses) if scheduler == "pbspro" else
                     [spec.licenses]) if spec.licenses else [],
    }


def batch_context(scheduler: str, task_id: str, sandbox: str, spec: ResourceSpecification,
                  chain: LaunchChain, command: Sequence[str], launch: bool = False,
                  wrap: bool = True, attempt: int = 1) -> dict[str, Any]:
    """Everything a batch-script template gets, formatted for `scheduler`.

    `command` is an argv list (e.g. the worker entry point), wrapped by `chain`; `launch` says
    whether the MPI launcher is part of the job's own command line (False for a worker that
    starts ranks itself through FNRELAY_MPI_PREFIX) and `wrap` whether it runs inside the
    container and conda env (False for a worker that runs MPIFunction: see LaunchChain).
    `attempt` numbers the agent's retries of the task, each its own job name.
    """
    if scheduler not in SCHEDULERS:
        raise TemplateRenderError(f"unknown scheduler {scheduler!r} (known: {SCHEDULERS})")
    check_sandbox(sandbox)
    refused = unsupported_key(scheduler, spec)
    if refused is not None:
        raise ResourceSpecificationError(
            f"resource_specification {refused!r}: not supported by {scheduler} endpoints "
            "(a site's own resource goes into scheduler_options)")
    walltime = spec.walltime
    memory = spec.memory
    walltime_text: str | int | None  # Slurm takes minutes, PBS "HH:MM:SS"
    if scheduler == "pbspro":
        walltime_text = hms(walltime) if walltime else None
        memory_text = pbs_memory(memory) if memory else None
    else:
        walltime_text = slurm_minutes(walltime) if walltime else None
        memory_text = memory
    return {
        "scheduler": scheduler,
        "task_id": task_id,
        "job_name": job_name(task_id, attempt),
        "attempt": attempt,
        "sandbox": sandbox,
        "stdout_path": f"{sandbox}/{STDOUT_FILE}",
        "stderr_path": f"{sandbox}/{STDERR_FILE}",
        "exit_status_file": EXIT_STATUS_FILE,
        "exit_status_path": f"{sandbox}/{EXIT_STATUS_FILE}",
        "num_nodes": spec.num_nodes,
        "ranks_per_node": spec.ranks_per_node,
        "num_ranks": spec.num_ranks,
        "cores_per_rank": spec.cores_per_rank,
        "cpus_per_node": spec.ranks_per_node * (spec.cores_per_rank or 1),
        "gpus_per_node": spec.gpus_per_node,
        "memory": memory_text,
        "walltime": walltime_text,
        "walltime_seconds": walltime,
        "partition": spec.partition,
        "account": spec.account,
        "qos": spec.qos,
        "constraint": spec.constraint,
        "exclusive": spec.exclusive,
        **_site_keys(scheduler, spec),
        "login_shell": spec.login_shell,
        "scheduler_options": spec.directives(scheduler),
        "prelude": list(chain.prelude),
        "exports": chain.env(),
        "command": chain.command_line(command, launch=launch, wrap=wrap),
    }
