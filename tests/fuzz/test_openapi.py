"""schemathesis against the running broker's /openapi.json: no generated request gets a 5xx.

Both schema-conforming (positive) and schema-violating (negative) requests are sent with a
valid token of a user of its own, so the fuzzer reaches the route code, not only the auth
check. A 5xx is a bug in the broker: bad input must answer 4xx with the error body.
"""

from __future__ import annotations

import json
import math
import uuid

import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.generation.modes import GenerationMode  # noqa: E402

#: Examples per operation and mode; 14 operations x 2 modes stay well under a minute.
EXAMPLES = 12

#: Random examples in every local run, so runs add up to a search; the same examples in CI
#: (hypothesis's "ci" profile, loaded when CI is set, derandomizes), so CI is reproducible.
_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                     suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def fuzz_token(broker) -> str:
    """A user of the fuzzer's own: what it registers never shows up in alice's lists."""
    return broker.add_user(f"fuzzer-{uuid.uuid4().hex[:6]}")


@pytest.fixture(scope="module")
def schema(broker_url):
    return schemathesis.openapi.from_url(f"{broker_url}/openapi.json", timeout=10)


def _assert_no_server_error(response, case) -> None:
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} answered {response.status_code}: "
        f"{response.text[:500]}\n  body={case.body!r} query={case.query!r} "
        f"headers={case.headers!r}"
    )
    if response.status_code >= 400:
        body = response.json()
        # Globus Auth's token route also answers in OAuth 2's error shape (RFC 6749 5.2),
        # which globus-sdk's auth client reads.
        oauth = {"error", "error_description"} if "/oauth2/" in case.formatted_path else set()
        assert set(body) - oauth == {"code", "message", "http_status"}, body
        assert body["http_status"] == response.status_code


def _operations(schema) -> list:
    ops = [result.ok() for result in schema.get_all_operations()]
    assert len(ops) >= 10, "the broker's schema lost its operations"
    return ops


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_generated_request_gets_a_server_error(schema, broker_url, fuzz_token, mode):
    session = requests.Session()
    auth = {"Authorization": f"Bearer {fuzz_token}"}
    for operation in _operations(schema):

        @_SETTINGS
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case) -> None:
            headers = {**auth, **(case.headers or {})}
            if "authorization" in {k.lower() for k in (case.headers or {})}:
                headers = {**(case.headers or {}), **auth}
            response = case.call(base_url=broker_url, session=session, headers=headers,
                                 timeout=30)
            _assert_no_server_error(response, case)

        try:
            check()
        except Unsatisfiable:
            # Negative mode: an operation with no parameter and no body has nothing to violate.
            assert mode is GenerationMode.NEGATIVE, operation.label


@pytest.fixture(scope="module")
def owned(broker_url, fuzz_token) -> dict[str, str]:
    """A real endpoint and function of the fuzz user, so submit reaches the database."""
    auth = {"Authorization": f"Bearer {fuzz_token}"}
    r = requests.post(f"{broker_url}/v1/endpoints", json={"name": "fuzz"}, headers=auth,
                      timeout=30)
    r.raise_for_status()
    eid = r.json()["endpoint_id"]
    r = requests.post(f"{broker_url}/v1/functions", headers=auth, timeout=30,
                      json={"function": "03\n\"not a function\"", "function_name": "f"})
    r.raise_for_status()
    return {"endpoint_id": eid, "function_id": r.json()["function_id"], **auth}


#: Text a database refuses, or that has tripped JSON/HTTP stacks before.
NASTY = ["\x00", "\ud800", "a\udfffb", "\ufeff", "\u202e", "%00", "\\u0000", "'; --", "\n03\n"]
_text = st.one_of(
    st.sampled_from(NASTY),
    st.text(st.characters(exclude_categories=()), max_size=40),  # NUL and lone surrogates too
)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)


@pytest.mark.slow
@_SETTINGS
@given(payload=_text, spec=st.dictionaries(_text, _json_values, max_size=3),
       key=st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=30),
       name=_text)
@example(payload="03\n1", spec={"walltime": math.inf, "n": -math.inf}, key="inf", name="f")
def test_odd_strings_in_real_submissions_never_get_a_server_error(
    broker_url, owned, payload, spec, key, name
):
    """Deeper than the schema fuzzer: valid ids, odd text (NUL, lone surrogates) everywhere."""
    auth = {"Authorization": owned["Authorization"]}
    task = {"function_id": owned["function_id"], "payload": payload,
            "resource_specification": spec, "user_endpoint_config": {}}
    # Sent as text: requests refuses inf in json=, a client in another language may send
    # Python's own spelling (Infinity), which the broker must refuse as a 4xx, not a 500.
    body = json.dumps({"endpoint_id": owned["endpoint_id"], "tasks": [task]})
    r = requests.post(f"{broker_url}/v1/submit", data=body.encode(),
                      headers={**auth, "Idempotency-Key": key,
                               "Content-Type": "application/json"}, timeout=30)
    assert r.status_code < 500, r.text
    r = requests.post(f"{broker_url}/v1/functions", headers=auth, timeout=30,
                      json={"function": payload, "function_name": name, "description": name})
    assert r.status_code < 500, r.text
    r = requests.get(f"{broker_url}/v1/tasks/{payload.encode('ascii', 'ignore').hex()}",
                     headers=auth, timeout=30)
    assert r.status_code < 500, r.text


#: Where an endpoint's metadata reaches the broker: POST creates, PUT updates (`owned`'s).
_REGISTRATIONS = [("POST", "/v1/endpoints"), ("PUT", "/v1/endpoints/{endpoint_id}")]


@pytest.mark.parametrize("bad", ["\x00", "x\ud800", "\udc00y"])
def test_text_a_database_cannot_store_is_a_422_naming_the_field(broker_url, owned, bad):
    """NUL and lone surrogates once reached SQLite and answered 500 (found by this suite)."""
    auth = {"Authorization": owned["Authorization"]}
    r = requests.post(f"{broker_url}/v1/functions", headers=auth, timeout=30,
                      json={"function": "03\n1", "function_name": bad})
    assert r.status_code == 422 and "function_name" in r.json()["message"], r.text
    task = {"function_id": owned["function_id"], "payload": "03\n[[],{}]",
            "resource_specification": {"k": [bad]}}
    r = requests.post(f"{broker_url}/v1/submit", timeout=30,
                      headers={**auth, "Idempotency-Key": str(uuid.uuid4())},
                      json={"endpoint_id": owned["endpoint_id"], "tasks": [task]})
    assert r.status_code == 422 and "resource_specification" in r.json()["message"], r.text
    for method, path in _REGISTRATIONS:  # creating an endpoint, and updating one
        r = requests.request(method, f"{broker_url}{path.format(**owned)}", headers=auth,
                             timeout=30, json={"name": "ep", "metadata": {bad: 1}})
        assert r.status_code == 422 and "metadata" in r.json()["message"], (method, r.text)


@pytest.mark.parametrize("number", [math.inf, -math.inf, math.nan])
def test_a_number_json_has_not_is_a_422_naming_the_field(broker_url, owned, number):
    """Python's json reads Infinity/NaN; stored, they would break other clients' reads."""
    auth = {"Authorization": owned["Authorization"], "Content-Type": "application/json"}
    task = {"function_id": owned["function_id"], "payload": "03\n1",
            "resource_specification": {"walltime": [number]}}
    body = json.dumps({"endpoint_id": owned["endpoint_id"], "tasks": [task]})  # Infinity, NaN
    r = requests.post(f"{broker_url}/v1/submit", timeout=30, data=body,
                      headers={**auth, "Idempotency-Key": str(uuid.uuid4())})
    assert r.status_code == 422 and "resource_specification" in r.json()["message"], r.text
    for method, path in _REGISTRATIONS:
        r = requests.request(method, f"{broker_url}{path.format(**owned)}", headers=auth,
                             timeout=30, data=json.dumps({"name": "ep",
                                                          "metadata": {"load": number}}))
        assert r.status_code == 422 and "metadata" in r.json()["message"], (method, r.text)
