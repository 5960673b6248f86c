"""Fixtures of the Executor's unit tests: an in-memory broker API and result queue."""

from __future__ import annotations

import pytest

from fnrelay.executor import watcher as watcher_module
from support.fake_transport import FakeApi, FakeTransport


@pytest.fixture
def fake(monkeypatch) -> FakeTransport:
    """The result queue in memory; the watcher polls it every 10 ms, not every idle period."""
    monkeypatch.setattr(watcher_module, "IDLE", 0.01)
    return FakeTransport()


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()
