"""Any Parsl provider and launcher by type, as Globus Compute configs name them.

The checks run against Parsl's real classes and signatures; SlurmProvider runs real pilot
jobs on the session's one-node Slurm cluster.
"""

from __future__ import annotations

import subprocess

import pytest

from fnrelay.errors import ConfigurationError
from fnrelay_endpoint.engines.parsl.providers import (
    launcher_from_spec,
    provider_from_spec,
)
from fnrelay_endpoint.engines.parsl.settings import ParslSettings


def square(x):
    return x * x


def hostname_and_job():
    import os
    import socket

    return socket.gethostname(), os.environ.get("SLURM_JOB_ID")


@pytest.mark.parametrize("provider, message", [
    ({"type": "CobaltProvider"}, r"engine\.provider\.type' must name a Parsl provider class.*"
                                 r"SlurmProvider"),
    ({"type": "SlurmProvider", "partitoin": "debug"},
     r"engine\.provider\.partitoin' is not a keyword of SlurmProvider \(it takes: .*partition"),
    ({"type": "SlurmProvider", "launcher": {"type": "SrunLauncher", "overides": "-x"}},
     r"engine\.provider\.launcher\.overides' is not a keyword of SrunLauncher"),
    ({"type": "SlurmProvider", "launcher": {"type": "MpiLauncher"}},
     r"engine\.provider\.launcher\.type' must name a Parsl launcher class"),
    ({"partition": "debug"}, r"engine\.provider' must be a mapping with a 'type'"),
    ({"type": "os.system"}, r"must name a Parsl provider class"),
])
def test_unknown_types_and_keys_are_refused_by_name(provider, message):
    with pytest.raises(ConfigurationError, match=message):
        ParslSettings.from_dict({"type": "parsl", "provider": provider})


def test_a_short_key_beside_a_typed_provider_is_refused():
    with pytest.raises(ConfigurationError, match=r"engine\.partition' .*inside engine\.provider"):
        ParslSettings.from_dict({"type": "parsl", "partition": "debug",
                                 "provider": {"type": "SlurmProvider"}})


def test_a_bad_value_is_a_configuration_error_not_a_stack_trace():
    with pytest.raises(ConfigurationError, match=r"could not build SlurmProvider"):
        provider_from_spec({"type": "SlurmProvider", "nodes_per_block": "two"})


def test_the_spec_builds_parsl_objects_others_can_reuse():
    provider = provider_from_spec({"type": "parsl.providers.SlurmProvider", "partition": "debug",
                                   "nodes_per_block": 2,
                                   "launcher": {"type": "SrunLauncher", "overrides": "-K0"}})
    assert type(provider).__name__ == "SlurmProvider"
    assert (provider.partition, provider.nodes_per_block) == ("debug", 2)
    assert type(provider.launcher).__name__ == "SrunLauncher"
    assert provider.launcher.overrides == "-K0"
    assert type(launcher_from_spec("SingleNodeLauncher")).__name__ == "SingleNodeLauncher"


def test_a_null_value_leaves_parsls_default_as_globus_compute_does():
    provider = provider_from_spec({"type": "SlurmProvider", "partition": None,
                                   "walltime": None, "launcher": {"type": "SrunLauncher",
                                                                  "overrides": None}})
    assert (provider.partition, provider.walltime) == (None, "00:10:00")
    assert provider.launcher.overrides == ""


def test_the_family_picks_the_default_mpi_launcher():
    s = ParslSettings.from_dict({"type": "parsl", "provider": {"type": "SlurmProvider"}})
    assert (s.provider, s.mpi.launcher) == ("slurm", "srun")
    s = ParslSettings.from_dict({"type": "parsl", "provider": {"type": "LSFProvider"}})
    assert (s.provider, s.mpi.launcher) == ("lsf", "openmpi")
    s = ParslSettings.from_dict({"type": "parsl", "provider": {"type": "KubernetesProvider",
                                                               "image": "x"},
                                 "mpi": {"enabled": False}})
    assert (s.provider, s.mpi.launcher) == ("other", "mpich")


@pytest.mark.slow
def test_a_typed_local_provider_runs_tasks(parsl_engine):
    h = parsl_engine(provider={"type": "LocalProvider", "init_blocks": 1, "max_blocks": 1,
                               "launcher": {"type": "SingleNodeLauncher"}},
                     max_workers_per_node=2, mpi={"enabled": False})
    ids = {h.submit(square, i): i for i in range(5)}
    results = h.wait(list(ids), timeout=90)
    assert all(h.value(results[t]) == i * i for t, i in ids.items())


@pytest.mark.slow
def test_a_typed_slurm_provider_with_srun_runs_a_task_in_a_real_pilot_job(
        parsl_engine, slurm_cluster):
    h = parsl_engine(provider={
        "type": "SlurmProvider", "partition": slurm_cluster.default_partition,
        "nodes_per_block": 1, "init_blocks": 1, "max_blocks": 1, "walltime": "00:05:00",
        "exclusive": False, "cores_per_node": 1, "launcher": {"type": "SrunLauncher"}},
        max_workers_per_node=1, mpi={"enabled": False})
    [result] = h.wait([h.submit(hostname_and_job)], timeout=150).values()
    host, job_id = h.value(result)
    [block] = h.engine.job_ids()["fnrelay-htex"]
    assert job_id == block  # the task ran inside the pilot job sbatch returned
    out = subprocess.run(["scontrol", "show", "job", block], capture_output=True, text=True,
                         timeout=30).stdout
    assert f"Partition={slurm_cluster.default_partition}" in out


def test_only_squeues_no_such_job_answer_is_read_as_an_empty_listing():
    """The Slurm provider's poll (polling.forgotten_jobs_are_gone): squeue's "Invalid job id
    specified" means slurmctld knows none of the jobs, so none is running; a controller that
    does not answer is still a failed poll, and other commands pass through."""
    from fnrelay_endpoint.engines.parsl.polling import forgotten_jobs_are_gone

    answers = {
        "squeue --job '7'": (1, "", "slurm_load_jobs error: Invalid job id specified\n"),
        "squeue --job '8'": (1, "", "slurm_load_jobs error: Unable to contact slurm controller"),
        "scancel 7": (1, "", "Invalid job id specified"),
        "squeue --job '9'": (0, "9 R\n", ""),
    }
    wrapped = forgotten_jobs_are_gone(lambda self, cmd, *a, **k: answers[cmd])
    assert wrapped(None, "squeue --job '7'") == (0, "", "")
    for cmd in ("squeue --job '8'", "scancel 7", "squeue --job '9'"):
        assert wrapped(None, cmd) == answers[cmd]
