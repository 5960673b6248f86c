"""The endpoint's setting checks: one sentence per mistake, naming the file and the key."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fnrelay.errors import ConfigurationError
from fnrelay_endpoint.config import validators as check


@pytest.mark.parametrize(("call", "says"), [
    (lambda: check.integer(0, "prefetch", "c.yaml", low=1),
     "c.yaml: 'prefetch' must be a positive integer, got 0"),
    (lambda: check.integer(True, "engine.max_workers", "c.yaml", low=1),
     "c.yaml: 'engine.max_workers' must be a positive integer, got True"),
    (lambda: check.integer(101, "max_retries", "c.yaml", low=0, high=100),
     "c.yaml: 'max_retries' must be an integer from 0 to 100, got 101"),
    (lambda: check.integer(-1, "engine.output_limit", "c.yaml", unit="bytes"),
     "c.yaml: 'engine.output_limit' must be a number of bytes (0 or more), got -1"),
    (lambda: check.integer(0, "min_uid", "c.yaml", low=1, why="root is always refused"),
     "c.yaml: 'min_uid' must be a positive integer (root is always refused), got 0"),
    (lambda: check.seconds("soon", "engine.poll_interval", "c.yaml"),
     "c.yaml: 'engine.poll_interval' must be a positive number of seconds, got 'soon'"),
    (lambda: check.seconds_or_null(0, "engine.idle_timeout", "c.yaml", "never stop"),
     "c.yaml: 'engine.idle_timeout' must be a positive number of seconds or null (never stop)"
     ", got 0"),
    (lambda: check.one_of("docker", "engine.containment", "c.yaml", ("auto", "cgroup")),
     "c.yaml: 'engine.containment' must be one of auto, cgroup, got 'docker'"),
    (lambda: check.interpreter("py\nthon", "engine.python", "c.yaml"),
     "c.yaml: 'engine.python' must be the path of a Python interpreter, got 'py\\nthon'"),
    (lambda: check.subset(["partition"], "engine.allowed_free_text", "c.yaml", {"modules"}),
     "c.yaml: 'engine.allowed_free_text' must be a list of modules, got ['partition']"),
    (lambda: check.known_keys({"type": 1, "workers": 2}, {"type"}, "c.yaml", "engine.",
                              "engine 'local'"),
     "c.yaml: unknown key 'engine.workers' for engine 'local' (known: type)"),
])
def test_each_check_names_the_file_the_key_and_the_value(call, says: str) -> None:
    with pytest.raises(ConfigurationError) as e:
        call()
    assert str(e.value) == says


def test_accepted_values_come_back_normalized() -> None:
    assert check.integer(3, "k", "c") == 3
    assert check.seconds(2, "k", "c") == 2.0 and isinstance(check.seconds(2, "k", "c"), float)
    assert check.seconds_or_null(None, "k", "c", "never") is None
    assert check.subset(None, "k", "c", {"a"}) == frozenset()


def test_the_config_model_loads_without_the_multi_user_package() -> None:
    """The model is what multiuser builds on; loading it must not pull multiuser back in."""
    code = ("import sys, fnrelay_endpoint.config.model; "
            "print(sorted(m for m in sys.modules if m.startswith('fnrelay_endpoint.multiuser')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
