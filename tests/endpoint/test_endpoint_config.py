"""EndpointConfig validation: every mistake names the key to fix."""

from __future__ import annotations

import os

import pytest

from fnrelay.errors import ConfigurationError
from fnrelay_endpoint.config.model import EndpointConfig

BASE = {"broker_url": "https://broker.example.org/"}


def test_defaults() -> None:
    c = EndpointConfig.from_dict(dict(BASE))
    assert c.broker_url == "https://broker.example.org"
    assert c.engine == {"type": "local", "max_workers": os.cpu_count() or 1,
                        "idle_timeout": 600.0}
    assert (c.prefetch, c.heartbeat_period, c.token) == (512, None, None)
    assert c.result_blob_limit == 0  # results over result_size_limit fail unless opted in
    assert EndpointConfig.from_dict({**BASE, "result_blob_limit": 2**30}).result_blob_limit \
        == 2**30


@pytest.mark.parametrize("extra, key", [
    ({"prefetch": 0}, "'prefetch'"),
    ({"prefetch": "many"}, "'prefetch'"),
    ({"engine": {"type": "slurm"}}, "'engine.type'"),
    ({"engine": {"max_workers": 0}}, "'engine.max_workers'"),
    ({"engine": {"idle_timeout": 0}}, "'engine.idle_timeout'"),
    ({"engine": {"idle_timeout": "soon"}}, "'engine.idle_timeout'"),
    ({"engine": {"workers": 2}}, "'engine.workers'"),
    ({"engine": "local"}, "'engine'"),
    ({"heartbeat_period": -1}, "'heartbeat_period'"),
    ({"broker_url": "broker:8000"}, "'broker_url'"),
    ({"tokn": "x"}, "'tokn'"),
    ({"result_blob_limit": -1}, "'result_blob_limit'"),
    ({"result_blob_limit": "1GB"}, "'result_blob_limit'"),
])
def test_errors_name_the_bad_key(extra: dict, key: str) -> None:
    with pytest.raises(ConfigurationError, match=key):
        EndpointConfig.from_dict({**BASE, **extra}, "config.yaml")


def test_token_falls_back_to_the_environment(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FNRELAY_HOME", str(tmp_path))
    monkeypatch.setenv("FNRELAY_TOKEN", "from-env")
    assert EndpointConfig.from_dict(dict(BASE)).resolved_token() == "from-env"
    assert EndpointConfig.from_dict({**BASE, "token": "own"}).resolved_token() == "own"
    monkeypatch.delenv("FNRELAY_TOKEN")
    with pytest.raises(ConfigurationError, match="no token"):
        EndpointConfig.from_dict(dict(BASE)).resolved_token()
