"""The endpoint's REST client maps each broker answer to one error, and retries only outages.

A small HTTP server on localhost plays the broker's answers (status and body), so the real
requests code path runs; the broker's own behaviour is covered by tests/endpoint and
tests/multiuser.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fnrelay.errors import AuthenticationError, BrokerError, BrokerUnavailableError
from fnrelay_endpoint.broker_api import BrokerAPI, Stopped, retry


class _Answers(BaseHTTPRequestHandler):
    #: (status, body) for each request, in turn; the last one repeats.
    answers: list[tuple[int, bytes]] = []
    seen: list[tuple[str, str, str]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.seen.append((self.command, self.path, self.headers.get("Authorization", "")))
        status, body = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def broker() -> Iterator[tuple[str, type[_Answers]]]:
    handler = type("Handler", (_Answers,), {"answers": [], "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def _message(text: str) -> bytes:
    return json.dumps({"message": text}).encode()


def test_registration_answers_map_to_errors_with_the_brokers_words(broker):
    url, handler = broker
    api = BrokerAPI(url + "/", "tok")
    handler.answers = [(200, b'{"amqp_url": "amqp://x"}')]
    assert api.update_endpoint("e1", "n", {}) == {"amqp_url": "amqp://x"}
    assert handler.seen[-1] == ("PUT", "/v1/endpoints/e1", "Bearer tok")
    handler.answers = [(401, _message("bad token"))]
    with pytest.raises(AuthenticationError, match="the broker refused the token: bad token"):
        api.update_endpoint("e1", "n", {})
    handler.answers = [(404, _message("endpoint e1 was deleted"))]
    with pytest.raises(BrokerError, match="was deleted .*remove endpoint.json") as e:
        api.update_endpoint("e1", "n", {})
    assert e.value.http_status == 404 and not isinstance(e.value, BrokerUnavailableError)
    handler.answers = [(503, b"not json")]
    with pytest.raises(BrokerUnavailableError, match="the broker answered 503: not json"):
        api.update_endpoint("e1", "n", {})


def test_statuses_appear_where_a_caller_asks_and_409_blob_is_done(broker):
    url, handler = broker
    api = BrokerAPI(url, "tok")
    handler.answers = [(400, _message("no such child"))]
    with pytest.raises(BrokerError, match=r"refused credentials for child c1 \(400\): no such"):
        api.child_credentials("m1", "c1")
    handler.answers = [(409, b"")]
    api.upload_blob("e1", "t1", b"data", "0" * 64)
    handler.answers = [(413, _message("too big"))]
    with pytest.raises(BrokerError, match="^HTTP 413: too big$"):
        api.upload_blob("e1", "t1", b"data", "0" * 64)
    handler.answers = [(404, b"")]
    assert api.delete_endpoint("e1") is False


def test_an_endpoint_token_is_told_it_cannot_create_endpoints(broker):
    url, handler = broker
    handler.answers = [(403, _message("forbidden"))]
    with pytest.raises(AuthenticationError, match="refused to create endpoint 'dir'.*user token"):
        BrokerAPI(url, "tok").create_endpoint("shown", {}, local_name="dir")


def test_an_unreachable_broker_names_its_url_and_the_reason():
    with pytest.raises(BrokerUnavailableError,
                       match=r"cannot reach the broker at http://127.0.0.1:9: \[Errno 111\]"):
        BrokerAPI("http://127.0.0.1:9", "tok").endpoint_status("e1")


def test_retry_waits_out_outages_and_stops_on_refusals_limits_and_stop(broker):
    url, handler = broker
    api = BrokerAPI(url, "tok")
    stop = threading.Event()
    waits: list[float] = []
    handler.answers = [(502, b""), (503, b""), (200, b"{}")]
    assert retry(lambda: api.endpoint_status("e"), stop, on_retry=lambda e, d: waits.append(d),
                 cap=0.01) == {}
    assert len(waits) == 2 and all(d <= 0.01 for d in waits)
    handler.answers = [(403, b"")]
    with pytest.raises(AuthenticationError):
        retry(lambda: api.endpoint_status("e"), stop, on_retry=lambda e, d: None, cap=0.01)
    handler.answers = [(503, b"")]
    with pytest.raises(BrokerUnavailableError):
        retry(lambda: api.endpoint_status("e"), stop, on_retry=lambda e, d: None,
              attempts=3, cap=0.01)

    def stop_now(error: BrokerError, delay: float) -> None:
        stop.set()

    with pytest.raises(Stopped):
        retry(lambda: api.endpoint_status("e"), stop, on_retry=stop_now, cap=30.0)
