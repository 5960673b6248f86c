"""Container runners: run a command inside an image, with the task sandbox bound in.

The sandbox is always bound at the same path inside, and is the working directory, so the
command finds its inputs and leaves its outputs where the endpoint looks for them.

Apptainer, Singularity and Shifter run a container as a process of the calling user with the
host's environment, network and IPC, which is what an MPI rank needs. Podman and Docker do
not: each rank's container gets the host network and IPC (MPI's shared-memory and TCP
transports), the calling user's uid (files in the sandbox stay the user's), and the variables
the launcher set for that rank (PMI, PMIx, Slurm, OpenMPI, PALS, OpenMP, GPU visibility),
which they do not inherit. With GPUs requested, each runtime gets its own GPU flag.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fnrelay.wire.names import ENV_NUM_NODES, ENV_NUM_RANKS, ENV_TASK_SANDBOX
from fnrelay_wrappers.shell import Token, option_tokens

RUNTIMES = ("apptainer", "singularity", "podman", "docker", "shifter")

#: An absolute path without characters that runtimes treat as separators (``:`` and ``,``),
#: whitespace, quotes or shell syntax.
_PATH = re.compile(r"^/[A-Za-z0-9_./+@%=-]*$")
#: Image references: local files (``/x/y.sif``), registries (``ghcr.io/a/b:1.0@sha256:...``)
#: and apptainer URIs (``docker://...``, ``library://...``).
IMAGE_PATTERN = re.compile(r"^[A-Za-z0-9_/.][A-Za-z0-9_./:@+-]*$")
#: Variables passed into runtimes that do not inherit the environment (podman, docker).
PASSED_ENV = (ENV_TASK_SANDBOX, ENV_NUM_RANKS, ENV_NUM_NODES)
#: A rank's launcher variables, as podman passes them: a name ending in ``*`` passes every host
#: variable with that prefix (podman-run(1), --env).
RANK_ENV_PREFIXES = ("PMI_*", "PMIX_*", "SLURM_*", "OMPI_*", "PALS_*", "OMP_*")
#: The same for docker, which takes no wildcards: the variables MPI libraries read at start-up.
RANK_ENV_NAMES = (
    "PMI_RANK", "PMI_SIZE", "PMI_LOCAL_RANK", "PMI_LOCAL_SIZE", "PMI_FD", "PMI_PORT", "PMI_ID",
    "PMIX_RANK", "PMIX_NAMESPACE", "PMIX_SERVER_URI2", "PMIX_SERVER_URI21",
    "PMIX_SERVER_URI3", "PMIX_SERVER_URI4", "PMIX_SERVER_URI41", "PMIX_SECURITY_MODE",
    "PMIX_GDS_MODULE", "PMIX_SERVER_TMPDIR", "PMIX_SYSTEM_TMPDIR",
    "SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID",
    "SLURM_NTASKS", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE", "PALS_RANKID",
    "PALS_LOCAL_RANKID", "MPI_LOCALRANKID", "OMP_NUM_THREADS",
)
#: Which GPUs a rank sees (set by the launcher or the GPU-affinity step).
GPU_ENV = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "ZE_AFFINITY_MASK")
GPU_VENDORS = ("nvidia", "amd")
#: GPU flags per runtime and vendor: Apptainer's --nv/--rocm, podman's CDI device (set up by
#: nvidia-ctk), docker's --gpus, AMD's device files, NERSC Shifter's gpu module.
GPU_FLAGS: dict[tuple[str, str], tuple[str, ...]] = {
    ("apptainer", "nvidia"): ("--nv",), ("apptainer", "amd"): ("--rocm",),
    ("singularity", "nvidia"): ("--nv",), ("singularity", "amd"): ("--rocm",),
    ("podman", "nvidia"): ("--device", "nvidia.com/gpu=all"),
    ("docker", "nvidia"): ("--gpus", "all"),
    ("podman", "amd"): ("--device", "/dev/kfd", "--device", "/dev/dri"),
    ("docker", "amd"): ("--device", "/dev/kfd", "--device", "/dev/dri"),
    ("shifter", "nvidia"): ("--module=gpu",),
}


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


def gpu_flags(runtime: str, vendor: str) -> list[Token]:
    """The runtime's flag that makes the host's GPUs usable inside (ValueError if it has none)."""
    try:
        return list(GPU_FLAGS[(runtime, vendor)])
    except KeyError:
        raise ValueError(f"container runtime {runtime!r} has no {vendor} GPU support in fnrelay "
                         f"(vendors: {', '.join(GPU_VENDORS)})") from None


def _rank_env(runtime: str) -> list[Token]:
    names = (*PASSED_ENV, *GPU_ENV, *(RANK_ENV_PREFIXES if runtime == "podman"
                                       else RANK_ENV_NAMES))
    return [token for name in names for token in ("-e", name)]


def endpoint_user() -> tuple[int, int]:
    """uid and gid the job runs as: the endpoint's (a multi-user endpoint renders after it
    has dropped to the user's account)."""
    return os.getuid(), os.getgid()


def _user(runtime: str) -> list[Token]:
    """The calling user inside; rootless podman also keeps its uid mapped (keep-id)."""
    uid, gid = endpoint_user()
    keep = ["--userns=keep-id"] if runtime == "podman" and uid != 0 else []
    return [*keep, f"--user={uid}:{gid}"]


def container_argv(runtime: str, image: str, binds: Iterable[Bind | str] = (),
                   sandbox: str | None = None,
                   options: str | Sequence[str] | None = None,
                   gpus: str | None = None) -> list[Token]:
    """The argv prefix that runs a command inside `image` with `runtime`.

    `gpus` is the GPU vendor ("nvidia" | "amd") when the task asked for GPUs, else None.
    """
    check_image(image)
    all_binds = _all_binds(binds, sandbox)
    extra = [*(gpu_flags(runtime, gpus) if gpus else []), *option_tokens(options)]
    if runtime in ("apptainer", "singularity"):
        argv: list[Token] = [runtime, "exec"]
        for b in all_binds:
            argv += ["--bind", b.spec()]
        if sandbox is not None:
            argv += ["--pwd", sandbox]
        return argv + extra + [image]
    if runtime in ("podman", "docker"):
        argv = [runtime, "run", "--rm", "--network=host", "--ipc=host", *_user(runtime)]
        for b in all_binds:
            argv += ["-v", b.spec()]
        if sandbox is not None:
            argv += ["-w", sandbox]
        return argv + _rank_env(runtime) + extra + [image]
    if runtime == "shifter":
        argv = ["shifter", f"--image={image}"]
        argv += [f"--volume={b.spec()}" for b in all_binds]
        if sandbox is not None:
            argv.append(f"--workdir={sandbox}")
        return argv + extra
    raise ValueError(f"unknown container runtime {runtime!r} (known: {', '.join(RUNTIMES)})")
