"""The SDK's warning that a call crosses Python versions: once per endpoint and version pair,
from what the endpoint's status says it runs."""

from __future__ import annotations

import uuid
import warnings

import pytest

from fnrelay import version_notice
from fnrelay.errors import PythonVersionWarning
from fnrelay.wire import pyversion


def _status(**details: object) -> dict:
    return {"status": "online", "details": details}


def test_warns_once_per_endpoint_naming_both_sides() -> None:
    ep = str(uuid.uuid4())
    with pytest.warns(PythonVersionWarning) as caught:
        assert version_notice.notice(ep, _status(python_version="2.7.18"))
    assert f"endpoint {ep} runs Python 2.7 and this SDK runs Python {pyversion.here()}" \
        in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not version_notice.notice(ep, _status(python_version="2.7.1"))
    with pytest.warns(PythonVersionWarning):  # another pair of the same endpoint
        assert version_notice.notice(ep, _status(python_versions=["2.6", "2.7"]))


def test_the_endpoints_list_of_versions_comes_first() -> None:
    here = pyversion.here()
    status = _status(python_version="2.7.18", python_versions=["2.7", here])
    assert version_notice.endpoint_versions(status) == sorted(["2.7", here])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not version_notice.notice(str(uuid.uuid4()), status)
        assert not version_notice.notice(str(uuid.uuid4()), {"status": "offline",
                                                              "details": None})
