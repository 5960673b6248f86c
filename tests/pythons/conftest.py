"""Fixtures for tests across Python versions: venvs on pyenv's interpreters, made once."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from support import pythons


@pytest.fixture(scope="session")
def python_venv(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., str]:
    """python_venv("3.13", sdk=False) -> the python of a venv with this checkout's fnrelay."""
    root = tmp_path_factory.mktemp("pythons")

    def make(version: str, sdk: bool = False) -> str:
        return pythons.venv(version, root, sdk)

    return make
