"""Makes tests/support importable (pytest runs with --import-mode=importlib) and exposes the
session-wide `slurm_cluster` fixture to the scheduler tests."""

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from support.slurm_fixtures import slurm_cluster  # noqa: E402, F401
