"""Results larger than a message: kept as blobs by the broker, fetched by the SDK.

Real brokers (`--blob-store db` on SQLite and on PostgreSQL, `--blob-store DIR`), RabbitMQ and
endpoints. Each broker here has its own RabbitMQ virtual host (fixture `new_vhost`), so it
never takes another's results.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from fnrelay import Client, Executor, errors
from fnrelay.blobs import parse_reference
from fnrelay.devstack.services import BrokerServer, LocalEndpoint
from fnrelay_broker import cleanup
from fnrelay_broker.db import Database
from support.postgres_fixtures import postgres  # noqa: F401 - fixture
from support.session import MARKER
from support.waiting import wait_for

#: Over the endpoints' default result size limit (10 MB) once serialized.
BIG = 15 * 1024 * 1024
CHUNK = b"fnrelay blob test " * 64


def big_bytes(n):
    """A result of n bytes (its serialized form is larger still)."""
    chunk = b"fnrelay blob test " * 64
    return (chunk * (n // len(chunk) + 1))[:n]


def expected(n: int) -> str:
    return hashlib.sha256((CHUNK * (n // len(CHUNK) + 1))[:n]).hexdigest()


class Stack:
    """A broker with a blob store, alice's and bob's tokens, and alice's endpoint."""

    def __init__(self, tmp: Path, amqp_url: str, *broker_args: str, db_url: str | None = None):
        self.broker = BrokerServer(tmp / "broker", amqp_url, db_url=db_url, marker=MARKER,
                                   extra_args=["--heartbeat-period", "1", *broker_args])
        self.broker.start()
        self.alice, self.bob = self.broker.add_user("alice"), self.broker.add_user("bob")
        self.endpoint = LocalEndpoint(tmp / "alice", "blobs", self.broker.url, self.alice,
                                      marker=MARKER).configure(
            max_workers=2, result_blob_limit=64 * 1024 * 1024)
        self.endpoint.start(foreground=True)

    @property
    def endpoint_id(self) -> str:
        return self.endpoint.endpoint_id

    def client(self, token: str | None = None) -> Client:
        return Client(self.broker.url, token or self.alice)

    def stop(self) -> None:
        self.endpoint.stop()
        self.broker.stop()


@pytest.fixture(scope="module")
def db_stack(tmp_path_factory, new_vhost) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("blob-db"), new_vhost("fnrelay-blob-db"),
                  "--blob-store", "db")
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def pg_stack(tmp_path_factory, new_vhost, postgres) -> Iterator[Stack]:  # noqa: F811
    stack = Stack(tmp_path_factory.mktemp("blob-pg"), new_vhost("fnrelay-blob-pg"),
                  "--blob-store", "db", db_url=postgres.create_database())
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def blob_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("shared-blobs")


@pytest.fixture(scope="module")
def dir_stack(tmp_path_factory, new_vhost, blob_dir) -> Iterator[Stack]:
    """Results live 6 s, so the test sees the cleaner delete the blob file."""
    stack = Stack(tmp_path_factory.mktemp("blob-dir"), new_vhost("fnrelay-blob-dir"),
                  "--blob-store", str(blob_dir), "--result-ttl", "6")
    yield stack
    stack.stop()


def run_big(stack: Stack) -> tuple[str, bytes]:
    """Run big_bytes(BIG) through an Executor; (task id, value of its future)."""
    with Executor(stack.endpoint_id, client=stack.client()) as ex:
        fut = ex.submit(big_bytes, BIG)
        value = fut.result(timeout=120)
    return fut.task_id, value


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_db_store_brings_a_15mb_result_back_through_futures_and_the_client(database, request):
    db_stack = request.getfixturevalue("db_stack" if database == "sqlite" else "pg_stack")
    task_id, value = run_big(db_stack)
    assert len(value) == BIG and hashlib.sha256(value).hexdigest() == expected(BIG)
    client = db_stack.client()
    again = client.get_result(task_id)
    assert again == value
    record = client.task_record(task_id)
    ref = parse_reference(record["result"])  # the record holds a reference, not the value
    assert ref is not None and ref.size == record["details"]["result_size"] > 10 * 1024 * 1024
    assert client.get_batch_result([task_id])[task_id]["result"] == value
    with Database(db_stack.broker.db_url).read() as s:  # the bytes are in the database
        from sqlalchemy import func, select

        from fnrelay_broker.models import ResultBlobChunk
        stored = s.scalar(select(func.sum(func.length(ResultBlobChunk.data)))
                          .where(ResultBlobChunk.task_id == task_id))
    assert stored == ref.size


def test_only_the_owner_reads_a_blob_and_only_its_endpoint_writes_it(db_stack):
    task_id, _ = run_big(db_stack)
    url = f"{db_stack.broker.url}/v1/tasks/{task_id}/blob"
    bob = {"Authorization": f"Bearer {db_stack.bob}"}
    assert requests.get(url, headers=bob, timeout=30).status_code == 404
    with pytest.raises(errors.NotFoundError):
        db_stack.client(db_stack.bob).get_result_blob(task_id)
    upload = f"{db_stack.broker.url}/v1/endpoints/{db_stack.endpoint_id}/blobs/{task_id}"
    body = b"03\n\"forged\""
    sha = {"X-Fnrelay-Sha256": hashlib.sha256(body).hexdigest()}
    assert requests.put(upload, data=body, headers={**bob, **sha},
                        timeout=30).status_code == 404
    other_endpoint = str(uuid.uuid4())
    alice = {"Authorization": f"Bearer {db_stack.alice}"}
    wrong = f"{db_stack.broker.url}/v1/endpoints/{other_endpoint}/blobs/{task_id}"
    assert requests.put(wrong, data=body, headers={**alice, **sha},
                        timeout=30).status_code == 404


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_repeated_upload_is_idempotent_and_the_first_result_wins(database, request):
    db_stack = request.getfixturevalue("db_stack" if database == "sqlite" else "pg_stack")
    task_id, value = run_big(db_stack)
    client = db_stack.client()
    blob = client.get_result_blob(task_id)
    upload = f"{db_stack.broker.url}/v1/endpoints/{db_stack.endpoint_id}/blobs/{task_id}"
    alice = {"Authorization": f"Bearer {db_stack.alice}"}
    same = requests.put(upload, data=blob, timeout=60, headers={
        **alice, "X-Fnrelay-Sha256": hashlib.sha256(blob).hexdigest()})
    assert same.status_code == 200 and same.json()["stored"] is False
    forged = b"03\n\"another result\""
    other = requests.put(upload, data=forged, timeout=30, headers={
        **alice, "X-Fnrelay-Sha256": hashlib.sha256(forged).hexdigest()})
    assert other.status_code == 409, other.text
    liar = requests.put(upload, data=forged, timeout=30, headers={
        **alice, "X-Fnrelay-Sha256": "0" * 64})
    assert liar.status_code in (400, 409)
    assert client.get_result(task_id) == value


def test_db_blobs_go_with_their_task_at_cleanup(db_stack):
    task_id, _ = run_big(db_stack)
    db = Database(db_stack.broker.db_url)
    try:
        # The cleaner's own function, as if the default TTL (7 days) had passed.
        cleanup.delete_expired(db, ttl=60, now=time.time() + 3600)
        with db.read() as s:
            from sqlalchemy import func, select

            from fnrelay_broker.models import ResultBlob, ResultBlobChunk
            left = [s.scalar(select(func.count()).select_from(m).where(m.task_id == task_id))
                    for m in (ResultBlob, ResultBlobChunk)]
    finally:
        db.dispose()
    assert left == [0, 0]
    with pytest.raises(errors.NotFoundError):
        db_stack.client().get_result_blob(task_id)


def test_a_shared_directory_store_brings_it_back_and_the_ttl_cleaner_deletes_it(
        dir_stack, blob_dir):
    task_id, value = run_big(dir_stack)
    assert hashlib.sha256(value).hexdigest() == expected(BIG)
    assert dir_stack.client().get_result(task_id) == value
    path = blob_dir / task_id
    ref = parse_reference(dir_stack.client().task_record(task_id)["result"])
    assert ref is not None and path.stat().st_size == ref.size
    wait_for(lambda: not path.exists(), "the cleaner to delete the blob file", timeout=60)
    with pytest.raises(errors.NotFoundError):
        dir_stack.client().get_result_blob(task_id)
    assert [p.name for p in blob_dir.iterdir()] == []  # no spool files left behind


def test_without_a_blob_store_a_large_result_fails_saying_how_big_it_was(client,
                                                                         make_endpoint):
    ep = make_endpoint("no-blob-store", result_size_limit=100_000, result_blob_limit=1_000_000)
    with Executor(ep.endpoint_id, client=client) as ex:
        fut = ex.submit(big_bytes, 300_000)
        with pytest.raises(Exception) as err:
            fut.result(timeout=120)
    text = str(err.value)
    assert "result size limit of 0.1 MB (100000 bytes)" in text
    assert "the broker keeps no result blobs" in text
    assert "0.4 MB serialized" in text


@pytest.mark.parametrize("store, says", [
    ("relative/blobs", "give 'db' or an absolute directory path"),
    ("/nonexistent/fnrelay-blobs", "not a writable directory"),
])
def test_a_bad_blob_store_stops_the_broker_with_one_line(tmp_path, store, says):
    cli = str(Path(sys.executable).parent / "fnrelay-broker")
    out = subprocess.run([cli, "serve", "--db", f"sqlite:///{tmp_path / 'b.db'}",
                          "--port", "1", "--blob-store", store],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "error: --blob-store" in out.stderr and says in out.stderr
    assert "Traceback" not in out.stderr
