"""Client behaviour that needs no broker: credentials, batches, unreachable brokers, CLI errors."""

from __future__ import annotations

import logging
import math
import socket
import time
import uuid

import pytest
from click.testing import CliRunner

from fnrelay import Client, Executor, errors, serialize
from fnrelay.cli import main
from fnrelay.config import save_credentials
from fnrelay.executor import _chunks


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.setenv("FNRELAY_HOME", str(tmp_path))
    monkeypatch.delenv("FNRELAY_BROKER_URL", raising=False)
    monkeypatch.delenv("FNRELAY_TOKEN", raising=False)
    return tmp_path


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_client_without_credentials_explains_how_to_log_in(clean_env):
    with pytest.raises(errors.ConfigurationError, match="fnrelay login"):
        Client()


def test_client_uses_saved_credentials(clean_env):
    save_credentials("http://broker.example:8080/", "tok")
    client = Client()
    assert client.broker_url == "http://broker.example:8080"
    assert client.base_url == "http://broker.example:8080/v1/"


def test_a_broker_url_without_scheme_is_a_configuration_error(clean_env):
    # It used to be retried for 19 s, then reported as "cannot reach the broker".
    with pytest.raises(errors.ConfigurationError, match="must start with http:// or https://"):
        Client("127.0.0.1:8080", "tok")


def test_unreachable_broker_raises_broker_unavailable(clean_env):
    client = Client(f"http://127.0.0.1:{closed_port()}", "tok")
    client.retry_config.max_retries = 0
    with pytest.raises(errors.BrokerUnavailableError, match="cannot reach the broker"):
        client.whoami()


def test_batch_serializes_arguments_when_added(clean_env):
    client = Client("http://broker.example", "tok")
    batch = client.create_batch(resource_specification={"num_nodes": 2})
    args = [1, 2]
    batch.add("fid", args=args, kwargs={"k": "v"})
    args.append(3)  # later mutation does not change what is sent
    (task,) = batch.tasks
    assert task["function_id"] == "fid"
    assert task["resource_specification"] == {"num_nodes": 2}
    assert serialize.deserialize_args(task["payload"]) == ((1, 2), {"k": "v"})
    batch.add("fid", args=None, kwargs=None)  # Globus Compute's defaults
    assert serialize.deserialize_args(batch.tasks[1]["payload"]) == ((), {})


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"resource_specification": [1, 2]}, "resource_specification must be a dict, not list"),
    ({"resource_specification": {"num_ranks": math.inf}},
     r"resource_specification\['num_ranks'\] is inf: only finite numbers"),
    ({"resource_specification": {"container": {"binds": [math.nan]}}},
     r"\['container'\]\['binds'\]\[0\] is nan"),
    ({"user_endpoint_config": {"cores": {1, 2}}}, r"\['cores'\] is a set: only JSON values"),
    ({"user_endpoint_config": {1: "a"}}, "user_endpoint_config: key 1 must be a string"),
])
def test_a_bad_resource_specification_or_endpoint_config_is_refused_where_it_is_given(
        clean_env, kwargs, match):
    # Over REST these failed late (inf: 'cannot reach the broker' after 15 s of retries; a set:
    # a bare TypeError in the future); on the direct path a list reached the endpoint and
    # killed its worker, and the future never resolved.
    client = Client(f"http://127.0.0.1:{closed_port()}", "tok")
    with pytest.raises(ValueError, match=match):
        Executor(str(uuid.uuid4()), client=client, **kwargs)
    with pytest.raises(ValueError, match=match):
        client.create_batch(**kwargs)
    ex = Executor(str(uuid.uuid4()), client=client)  # set between submits, as in Globus Compute
    ((attribute, value),) = kwargs.items()
    with pytest.raises(ValueError, match=match):
        setattr(ex, attribute, value)
    assert getattr(ex, attribute) == {}
    setattr(ex, attribute, {"num_nodes": 2})
    assert getattr(ex, attribute) == {"num_nodes": 2}


def test_an_endpoint_id_that_is_not_a_uuid_is_refused_at_once(clean_env):
    client = Client(f"http://127.0.0.1:{closed_port()}", "tok")
    with pytest.raises(ValueError, match="endpoint_id must be a UUID, not 'my-endpoint'"):
        Executor("my-endpoint", client=client)


def test_submit_after_shutdown_raises_runtime_error_without_asking_the_broker(clean_env):
    # It registered the function first: with the broker away, BrokerUnavailableError after
    # retries instead of the RuntimeError concurrent.futures promises.
    client = Client(f"http://127.0.0.1:{closed_port()}", "tok")
    client.retry_config.max_retries = 0
    ex = Executor(str(uuid.uuid4()), client=client)
    ex.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(len, "abc")


def test_batches_are_split_by_payload_size():
    items = [(object(), {"payload": "x" * 40}) for _ in range(10)]
    chunks = _chunks(items, 100)
    assert [len(c) for c in chunks] == [2, 2, 2, 2, 2]
    assert [i for c in chunks for i in c] == items


def test_cli_prints_one_line_errors_without_traceback(clean_env):
    result = CliRunner().invoke(main, ["whoami"])
    assert result.exit_code == 1
    assert result.output.strip().startswith("Error: no broker URL")
    assert "Traceback" not in result.output


def test_cli_login_to_unreachable_broker_fails_cleanly(clean_env):
    result = CliRunner().invoke(
        main, ["login", "--broker-url", f"http://127.0.0.1:{closed_port()}", "--token", "t"]
    )
    assert result.exit_code == 1
    assert "cannot reach the broker" in result.output
    assert not (clean_env / "credentials.json").exists()


def test_unreachable_broker_is_said_at_once_with_the_url_and_how_long_it_retries(
        clean_env, caplog):
    url = f"http://127.0.0.1:{closed_port()}"
    client = Client(url, "tok")
    client.retry_config.max_retries = 2  # ~1.5 s of retries, not ~15 s: the same rule
    caplog.set_level(logging.WARNING, logger="fnrelay")
    started = time.time()
    for _ in range(2):
        with pytest.raises(errors.BrokerUnavailableError):
            client.whoami()
    said = [r for r in caplog.records if r.name.startswith("fnrelay")]
    assert [r.getMessage() for r in said] == [
        f"the broker at {url} cannot be reached (Connection refused); retrying for about 2 s"]
    assert said[0].created - started < 0.5  # before the first retry, not after the last


def square(x):
    return x * x


def test_an_executor_sending_to_an_unreachable_broker_says_so_at_once(clean_env, caplog):
    # The function is bound to an id (no request): the first request is the submitter
    # thread's, which used to retry for ~15 s in silence before failing the future.
    url = f"http://127.0.0.1:{closed_port()}"
    client = Client(url, "tok")
    client.retry_config.max_retries = 2
    caplog.set_level(logging.WARNING, logger="fnrelay")
    started = time.time()
    ex = Executor(endpoint_id=str(uuid.uuid4()), client=client)
    ex.register_function(square, function_id=str(uuid.uuid4()))
    future = ex.submit(square, 3)
    assert isinstance(future.exception(timeout=30), errors.BrokerUnavailableError)
    said = [r for r in caplog.records if r.name.startswith("fnrelay.retry_notice")]
    assert [r.getMessage() for r in said] == [
        f"the broker at {url} cannot be reached (Connection refused); retrying for about 2 s"]
    assert said[0].created - started < 0.5
    ex.shutdown()
