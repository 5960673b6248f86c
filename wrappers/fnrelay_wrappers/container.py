"""Container runners: run a command inside an image, with the task sandbox bound in.

The sandbox is always bound at the same path inside, and is the working directory, so the
command finds its inputs and leaves its outputs where the endpoint looks for them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fnrelay.wire.names import ENV_NUM_NODES, ENV_NUM_RANKS, ENV_TASK_SANDBOX
from fnrelay_wrappers.shell import Token, split_options

RUNTIMES = ("apptainer", "singularity", "podman", "docker", "shifter")

#: An absolute path without characters that runtimes treat as separators (``:`` and ``,``),
#: whitespace, quotes or shell syntax.
_PATH = re.compile(r"^/[A-Za-z0-9_./+@%=-]*$")
#: Image references: local files (``/x/y.sif``), registries (``ghcr.io/a/b:1.0@sha256:...``)
#: and apptainer URIs (``docker://...``, ``library://...``).
IMAGE_PATTERN = re.compile(r"^[A-Za-z0-9_/.][A-Za-z0-9_./:@+-]*$")
#: Variables passed into runtimes that do not inherit the environment (podman, docker).
PASSED_ENV = (ENV_TASK_SANDBOX, ENV_NUM_RANKS, ENV_NUM_NODES)


def check_path(path: str) -> str:
    """`path` if it is a plain absolute path, else ValueError."""
    if not isinstance(path, str) or not _PATH.fullmatch(path) or "/../" in f"{path}/":
        raise ValueError(f"not a plain absolute path: {path!r}")
    return path


def check_image(image: str) -> str:
    """`image` if it is a plain image reference, else ValueError."""
    if not isinstance(image, str) or len(image) > 512 or not IMAGE_PATTERN.fullmatch(image):
        raise ValueError(f"not a valid container image reference: {image!r}")
    return image


@dataclass(frozen=True)
class Bind:
    """A host path mounted in the container: ``/src``, ``/src:/dst`` or ``/src:/dst:ro``."""

    src: str
    dst: str
    read_only: bool = False

    def __post_init__(self) -> None:
        check_path(self.src)
        check_path(self.dst)

    @classmethod
    def parse(cls, text: str) -> Bind:
        if not isinstance(text, str):
            raise ValueError(f"a bind must be a string like '/src:/dst', not {text!r}")
        parts = text.split(":")
        read_only = False
        if len(parts) in (2, 3) and parts[-1] in ("ro", "rw"):
            read_only = parts.pop() == "ro"
        if len(parts) == 1:
            return cls(parts[0], parts[0], read_only)
        if len(parts) == 2:
            return cls(parts[0], parts[1], read_only)
        raise ValueError(f"a bind is '/src', '/src:/dst' or '/src:/dst:ro', not {text!r}")

    def spec(self) -> str:
        return f"{self.src}:{self.dst}" + (":ro" if self.read_only else "")


def _all_binds(binds: Iterable[Bind | str], sandbox: str | None) -> list[Bind]:
    result = [b if isinstance(b, Bind) else Bind.parse(b) for b in binds]
    if sandbox is not None and not any(b.dst == sandbox for b in result):
        result.append(Bind(sandbox, sandbox))
    return result


def container_argv(runtime: str, image: str, binds: Iterable[Bind | str] = (),
                   sandbox: str | None = None,
                   options: str | Sequence[str] | None = None) -> list[Token]:
    """The argv prefix that runs a command inside `image` with `runtime`."""
    check_image(image)
    all_binds = _all_binds(binds, sandbox)
    extra = split_options(options)
    if runtime in ("apptainer", "singularity"):
        argv: list[Token] = [runtime, "exec"]
        for b in all_binds:
            argv += ["--bind", b.spec()]
        if sandbox is not None:
            argv += ["--pwd", sandbox]
        return argv + extra + [image]
    if runtime in ("podman", "docker"):
        argv = [runtime, "run", "--rm"]
        for b in all_binds:
            argv += ["-v", b.spec()]
        if sandbox is not None:
            argv += ["-w", sandbox]
        for name in PASSED_ENV:
            argv += ["-e", name]
        return argv + extra + [image]
    if runtime == "shifter":
        argv = ["shifter", f"--image={image}"]
        argv += [f"--volume={b.spec()}" for b in all_binds]
        if sandbox is not None:
            argv.append(f"--workdir={sandbox}")
        return argv + extra
    raise ValueError(f"unknown container runtime {runtime!r} (known: {', '.join(RUNTIMES)})")
