"""Fixtures for tests across Python versions: venvs on pyenv's interpreters, made once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support import pythons
from support.pythons import Engine


@pytest.fixture(scope="session")
def python_venv(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., str]:
    """python_venv("3.13", sdk=False, parsl=False) -> the python of a venv with this
    checkout's fnrelay."""
    root = tmp_path_factory.mktemp("pythons")

    def make(version: str, sdk: bool = False, parsl: bool = False) -> str:
        return pythons.venv(version, root, sdk, parsl)

    return make


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A find-links directory holding this checkout's fnrelay wheel and dill."""
    return str(pythons.wheelhouse(tmp_path_factory.mktemp("wheels")))


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Callable[..., Engine]]:
    made: list[Engine] = []

    def make(**engine: Any) -> Engine:
        made.append(Engine({"max_workers": 1, **engine}, tmp_path))
        return made[-1]

    yield make
    for e in made:
        e.engine.shutdown()
