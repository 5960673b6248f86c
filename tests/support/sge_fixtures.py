"""pytest fixture `sge_cell`: the machine's real Son of Grid Engine cell, for the session.

Its root and ports are fixed by Debian's packages, so there is one per session. Missing Grid
Engine is a test failure, not a skip (`make test-deps` installs it), as for Slurm.
"""

from __future__ import annotations

import atexit
from collections.abc import Iterator

import pytest

from support.sge_cluster import SGECell

_cell: SGECell | None = None


def _stop() -> None:
    global _cell
    if _cell is not None:
        _cell.stop()
        _cell = None


@pytest.fixture(scope="session")
def sge_cell() -> Iterator[SGECell]:
    """A running one-host Grid Engine; SGE_ROOT and SGE_CELL are set while the session lasts."""
    global _cell
    if _cell is None:
        _cell = SGECell().start()
        atexit.register(_stop)
    yield _cell
    _stop()
