"""Conda env selection and the module/pre-exec prelude."""

from __future__ import annotations

import pytest

from fnrelay_wrappers.conda import CondaEnv
from fnrelay_wrappers.prelude import module_lines, pre_exec_lines
from fnrelay_wrappers.shell import join


def test_conda_run_by_name_and_prefix():
    assert join(CondaEnv(env="sci-3.11+cuda").run_argv()) == \
        "conda run --no-capture-output -n sci-3.11+cuda"
    assert join(CondaEnv(prefix="/opt/envs/sci").run_argv()) == \
        "conda run --no-capture-output -p /opt/envs/sci"


def test_conda_activation_lines():
    assert CondaEnv(env="sci").activation_lines() == [
        'eval "$(conda shell.bash hook)"', "conda activate sci"]


@pytest.mark.parametrize("kwargs", [{}, {"env": "a", "prefix": "/b"}, {"env": "x;id"},
                                    {"prefix": "rel"}, {"env": "-n"}])
def test_conda_refuses(kwargs):
    with pytest.raises(ValueError):
        CondaEnv(**kwargs)


def test_module_names_are_quoted():
    assert module_lines(["gcc/12.2", "cuda 12"]) == [
        "module load gcc/12.2", "module load 'cuda 12'"]
    with pytest.raises(ValueError):
        module_lines(["gcc\nid"])


def test_pre_exec_lines_are_kept_verbatim():
    assert pre_exec_lines("source /etc/site.sh\n\nexport A=$HOME") == [
        "source /etc/site.sh", "export A=$HOME"]
    with pytest.raises(ValueError):
        pre_exec_lines(["a\nb"])
