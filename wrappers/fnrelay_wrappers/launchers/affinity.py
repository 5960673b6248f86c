"""A GPU-affinity step between the launcher and the command: each rank sees only its GPUs.

Launchers without GPU binding of their own (Cray PALS, MPICH, OpenMPI) start every rank with
all of a node's GPUs visible. Sites such as ALCF's Polaris put a small script between
``mpiexec`` and the program that picks the rank's GPUs from its node-local rank; this is
fnrelay's version, inline (``sh -c``) so nothing has to be installed on the compute nodes.
Rank r of a node with G GPUs and g GPUs per rank sees GPUs r*g .. r*g+g-1 (mod G), counted
from the last GPU with ``reverse`` (Polaris numbers its GPUs opposite to its CPU sockets).
"""

from __future__ import annotations

from fnrelay_wrappers.layout import Layout
from fnrelay_wrappers.shell import Token

#: The variable each vendor's runtime reads; only one is set (HIP also reads
#: CUDA_VISIBLE_DEVICES, and two filters on one machine would compose wrongly).
VENDORS = {"nvidia": "CUDA_VISIBLE_DEVICES", "amd": "ROCR_VISIBLE_DEVICES",
           "intel": "ZE_AFFINITY_MASK"}
#: The node-local rank, as PALS, MPICH (PMI), OpenMPI, MPICH Hydra and srun name it.
LOCAL_RANK = ("PALS_LOCAL_RANKID", "PMI_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK",
              "MPI_LOCALRANKID", "SLURM_LOCALID")
ARGV0 = "fnrelay-gpu-affinity"


def _script() -> str:
    rank = "0"
    for name in reversed(LOCAL_RANK):
        rank = f"${{{name}:-{rank}}}"
    return (
        'n=$1 per=$2 order=$3 var=$4; shift 4; '
        f'r={rank}; d=; i=0; '
        'while [ "$i" -lt "$per" ]; do '
        'g=$(( (r * per + i) % n )); '
        'if [ "$order" = reverse ]; then g=$(( n - 1 - g )); fi; '
        'd=${d:+$d,}$g; i=$(( i + 1 )); '
        'done; '
        'export "$var=$d"; exec "$@"'
    )


SCRIPT = _script()


def gpu_affinity_argv(layout: Layout, vendor: str = "nvidia",
                      order: str = "forward") -> list[Token]:
    """``sh -c SCRIPT fnrelay-gpu-affinity G g order VAR``: the command's argv follows."""
    return ["sh", "-c", SCRIPT, ARGV0, str(layout.gpus_per_node), str(layout.gpus_per_rank),
            order, VENDORS[vendor]]
