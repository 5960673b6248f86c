"""pytest fixture `slurm_cluster`: one real one-node Slurm cluster for the whole session.

The cluster is process-wide: if several conftest files import this fixture, they share it.
Missing Slurm is a test failure, not a skip (the suite's set-up installs it).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from support.slurm_cluster import SlurmCluster

_cluster: SlurmCluster | None = None


def _stop() -> None:
    global _cluster
    if _cluster is not None:
        _cluster.stop()
        shutil.rmtree(_cluster.root, ignore_errors=True)
        _cluster = None


def shared_cluster() -> SlurmCluster:
    """The running cluster, started on first use (short /tmp path: socket paths are limited)."""
    global _cluster
    if _cluster is None:
        cluster = SlurmCluster(tempfile.mkdtemp(prefix="fnslurm-"))
        try:
            cluster.start()
        except BaseException:
            shutil.rmtree(cluster.root, ignore_errors=True)
            raise
        _cluster = cluster
        atexit.register(_stop)
    return _cluster


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A running one-node Slurm; SLURM_CONF points at it while the session lasts."""
    yield shared_cluster()
    _stop()
