"""The batch engine's config is checked before any job exists; MPIFunction tasks are told apart
without unpickling them."""

from __future__ import annotations

import sys

import pytest

from fnrelay import MPIFunction, ShellFunction
from fnrelay.errors import ConfigurationError
from fnrelay.serialize import serialize_function
from fnrelay_endpoint.engines.batch.engine import BatchConfig, is_mpi_function


def test_a_full_config_is_accepted(tmp_path):
    template = tmp_path / "site.sh.j2"
    template.write_text("#!/bin/bash\n")
    cfg = BatchConfig.from_dict({
        "type": "batch", "scheduler": "pbspro", "template": str(template),
        "defaults": {"queue": "workq", "walltime": "01:00:00", "modules": ["gcc/12"]},
        "allowed_free_text": ["pre_exec"], "launcher": {"type": "mpich"},
        "poll_interval": 2, "python": sys.executable, "max_workers": 4,
        "max_jobs": 100, "max_pending": 86400,
    })
    assert (cfg.max_jobs, cfg.max_pending) == (100, 86400.0)
    assert (cfg.scheduler, cfg.launcher, cfg.poll_interval) == ("pbspro", "mpich", 2.0)
    assert cfg.allowed_free_text == {"pre_exec"}


def test_default_poll_interval_spares_the_scheduler():
    """Every endpoint of every user polls squeue/qstat: the default is half a minute, not 5 s."""
    assert BatchConfig.from_dict({"scheduler": "slurm"}).poll_interval == 30.0


def test_default_launcher_follows_the_scheduler():
    assert BatchConfig.from_dict({"scheduler": "slurm"}).launcher == "srun"
    assert BatchConfig.from_dict({"scheduler": "slurm", "launcher": None}).launcher is None


@pytest.mark.parametrize("config, key", [
    ({"scheduler": "cobalt"}, "engine.scheduler"),
    ({"scheduler": "slurm", "queue_size": 3}, "engine.queue_size"),
    ({"scheduler": "slurm", "template": "/nonexistent/site.j2"}, "engine.template"),
    ({"scheduler": "slurm", "allowed_free_text": ["partition"]}, "engine.allowed_free_text"),
    ({"scheduler": "slurm", "defaults": {"partition": "a b"}}, "engine.defaults"),
    ({"scheduler": "slurm", "defaults": {"scheduler_options": ["#PBS -l x"]}},
     "engine.defaults"),
    ({"scheduler": "slurm", "launcher": "mpirun"}, "engine.launcher"),
    ({"scheduler": "slurm", "launcher": {"type": "openmpi", "colour": 1}}, "engine.launcher"),
    ({"scheduler": "slurm", "poll_interval": 0}, "engine.poll_interval"),
    ({"scheduler": "slurm", "python": "/opt/fnrelay/bin/python"}, "engine.python"),
    ({"scheduler": "slurm", "python": "no-such-python3"}, "engine.python"),
    ({"scheduler": "slurm", "max_jobs": 0}, "engine.max_jobs"),
    ({"scheduler": "sge", "pack_window": 2}, "engine.pack_window"),
    ({"scheduler": "slurm", "pack_window": 0}, "engine.pack_window"),
    ({"scheduler": "slurm", "max_jobs": "10"}, "engine.max_jobs"),
    ({"scheduler": "slurm", "max_pending": -1}, "engine.max_pending"),
])
def test_bad_settings_are_refused_naming_the_key(config, key):
    with pytest.raises(ConfigurationError, match=key.replace(".", r"\.")):
        BatchConfig.from_dict(config, "config.yaml")


def plain(x):
    return x


def test_mpi_functions_are_recognised_without_unpickling():
    assert is_mpi_function(serialize_function(MPIFunction("hostname")))
    assert not is_mpi_function(serialize_function(ShellFunction("hostname")))
    assert not is_mpi_function(serialize_function(plain))
    assert not is_mpi_function("01\nnot base64 pickle")
