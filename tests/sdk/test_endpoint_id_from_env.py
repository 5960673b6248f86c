"""The quickstart's samples read the endpoint id that `eval "$(fnrelay local up)"` exports; in
a shell without it they must say what to do, not die with a KeyError."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fnrelay import endpoint_id_from_env, errors

QUICKSTART = Path(__file__).resolve().parents[2] / "docs" / "quickstart.md"


def test_the_quickstart_without_the_stack_says_to_eval_it():
    sample = re.findall(r"```python\n(.*?)```", QUICKSTART.read_text(), re.S)[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FNRELAY_")}
    run = subprocess.run([sys.executable, "-c", sample], capture_output=True, text=True,
                         env=env, timeout=60)
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert "KeyError" not in run.stderr
    assert "FNRELAY_ENDPOINT_ID is not set" in last
    assert 'eval "$(fnrelay local up)"' in last


def test_endpoint_id_from_env_reads_the_exported_id(monkeypatch):
    monkeypatch.setenv("FNRELAY_ENDPOINT_ID", "3f1c0d6e-0000-4000-8000-000000000001")
    assert endpoint_id_from_env() == "3f1c0d6e-0000-4000-8000-000000000001"
    monkeypatch.setenv("FNRELAY_ENDPOINT_ID", " ")
    with pytest.raises(errors.ConfigurationError, match="is not set"):
        endpoint_id_from_env()
