"""A RabbitMQ cluster's URL list: one URL per node, separated by commas; every party parses it
alike, and a single URL is a list of one (existing configurations are unchanged)."""

from __future__ import annotations

from click.testing import CliRunner

from fnrelay.amqp import connection_parameters, first_url, parameter_list, split_urls
from fnrelay.executor.group import with_port
from fnrelay.executor.watcher import host_of
from fnrelay_broker.accounts import url_with_credentials
from fnrelay_broker.cli import main as broker_cli
from fnrelay_broker.queues import CLASSIC, QUORUM, queue_arguments

A = "amqp://admin:p%2Cw@10.0.0.1:5672/vh"
B = "amqp://admin:p%2Cw@10.0.0.2:5673/vh"


def test_a_single_url_is_a_list_of_one():
    assert split_urls(A) == [A]
    [params] = parameter_list(A)
    assert (params.host, params.port, params.credentials.password) == ("10.0.0.1", 5672, "p,w")


def test_a_list_gives_one_parameter_set_per_node_with_the_same_settings():
    params = parameter_list(f"{A}, {B}", "me", socket_timeout=5, connection_attempts=1)
    assert [(p.host, p.port) for p in params] == [("10.0.0.1", 5672), ("10.0.0.2", 5673)]
    assert all(p.socket_timeout == 5 and p.connection_attempts == 1 for p in params)
    assert all(p.client_properties == {"connection_name": "me"} for p in params)
    assert first_url(f"{A},{B}") == A
    assert connection_parameters(f"{A},{B}").host == "10.0.0.1"


def test_each_party_gets_its_own_credentials_on_every_node():
    url = url_with_credentials(f"{A},{B}", "fnrelay-group-x", "s3cret,/")
    assert split_urls(url) == ["amqp://fnrelay-group-x:s3cret%2C%2F@10.0.0.1:5672/vh",
                               "amqp://fnrelay-group-x:s3cret%2C%2F@10.0.0.2:5673/vh"]


def test_port_override_and_messages_cover_every_node():
    assert [p.port for p in parameter_list(with_port(f"{A},{B}", 9999))] == [9999, 9999]
    assert host_of(f"{A},{B}") == "10.0.0.1:5672,10.0.0.2:5673"
    assert "admin" not in host_of(f"{A},{B}")


def test_quorum_queues_carry_their_type_and_classic_ones_are_declared_as_before():
    assert queue_arguments(CLASSIC) is None
    assert queue_arguments(CLASSIC, **{"x-expires": 5}) == {"x-expires": 5}
    assert queue_arguments(QUORUM, **{"x-expires": 5}) == {"x-expires": 5,
                                                          "x-queue-type": "quorum"}


def test_broker_refuses_a_list_with_a_malformed_url_in_one_line():
    result = CliRunner().invoke(broker_cli, ["serve", "--amqp-url", f"{A},http://x/"],
                                env={"FNRELAY_AMQP_URL": None})
    assert result.exit_code == 2
    assert "not a RabbitMQ URL" in result.output and "Traceback" not in result.output
    assert "p%2Cw" not in result.output


def test_broker_refuses_an_unknown_queue_type():
    result = CliRunner().invoke(broker_cli, ["serve", "--queue-type", "stream"])
    assert result.exit_code == 2 and "quorum" in result.output


def test_a_queue_of_another_type_names_the_migration():
    from fnrelay_broker.amqp import queue_type_hint

    refused = ("PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q': "
               "received 'quorum' but current is 'classic'")
    assert "fnrelay-broker queues migrate" in queue_type_hint(Exception(refused))
    assert queue_type_hint(Exception("NOT_FOUND - no queue 'q'")) == ""


class _BrokenConnection:
    """What pika's BlockingConnection is after its node reset the socket mid-call."""

    is_open = False

    def process_data_events(self, time_limit: float) -> None:
        raise ValueError("Timeout closed before call")


def test_a_connection_that_broke_mid_call_raises_a_connection_error():
    import pika.exceptions
    import pytest

    from fnrelay.amqp import process_events

    with pytest.raises(pika.exceptions.AMQPConnectionError):
        process_events(_BrokenConnection(), 1)  # type: ignore[arg-type]
