"""What each scheduler's job script can express: settings it has no directive for are refused.

A task asking for a QOS on PBS, GPUs on a Grid Engine without a GPU complex, or a walltime on
Flux's memory-less scheduler would otherwise run without what it asked for. The refusal names
the key and the scheduler, and points at `scheduler_options` for a site's own resource names.
"""

from __future__ import annotations

from typing import Any

#: Resource-specification keys with no standard directive, per scheduler.
#: The typed site keys (resources.py) only the Slurm and PBSPro templates render; PBS has no
#: gres, clusters or signal, Slurm no chunk or filesystems. login_shell is a Slurm shebang (PBS
#: Pro starts a login shell itself); the other templates do not render it yet. `requeue: true`
#: only Slurm and PBS templates render (the others never ask their scheduler to requeue).
_SLURM_ONLY = frozenset({"gres", "clusters", "signal"})
_PBS_ONLY = frozenset({"chunk", "filesystems"})
_SITE_KEYS = _SLURM_ONLY | _PBS_ONLY | {"reservation", "licenses", "login_shell", "requeue"}
UNSUPPORTED: dict[str, frozenset[str]] = {
    "slurm": _PBS_ONLY,
    "pbspro": frozenset({"qos", "constraint"}) | _SLURM_ONLY,
    # SGE: QOS and features do not exist; GPUs and exclusive hosts are site-defined complexes.
    "sge": frozenset({"qos", "constraint", "gpus_per_node", "exclusive"}) | _SITE_KEYS,
    "lsf": frozenset({"qos", "constraint"}) | _SITE_KEYS,
    # Flux's default resource match has no memory; `constraint` has its own RFC 31 syntax.
    "flux": frozenset({"qos", "constraint", "memory"}) | _SITE_KEYS,
    # HTCondor's vanilla universe: one slot on one machine, no queues or node exclusivity.
    "htcondor": frozenset({"qos", "constraint", "partition", "exclusive"}) | _SITE_KEYS,
}
#: Schedulers whose per-task jobs hold one node only.
SINGLE_NODE = frozenset({"htcondor"})


def unsupported_key(scheduler: str, spec: Any) -> str | None:
    """The first key `spec` sets that `scheduler` cannot express, else None."""
    for key in sorted(UNSUPPORTED.get(scheduler, frozenset())):
        if getattr(spec, key, None):
            return key
    if scheduler in SINGLE_NODE and getattr(spec, "num_nodes", 1) > 1:
        return "num_nodes"
    return None
