"""The Executor as Globus Compute code uses it (globus_compute_sdk 4.19's Executor), wired to
an in-memory broker and result queue: an endpoint set after construction, register_function,
reload_tasks(task_group_id=...), and the keywords it accepts."""

from __future__ import annotations

import threading
import uuid
import warnings
from collections.abc import Iterator
from typing import cast

import pytest

from fnrelay import Executor
from fnrelay.client import Client
from fnrelay.executor import UnusedOption
from fnrelay.executor.group import with_port
from support.fake_transport import success

WAIT = 5.0
EP1, EP2 = str(uuid.uuid4()), str(uuid.uuid4())


def square(x: int) -> int:
    return x * x


@pytest.fixture
def make(api, fake) -> Iterator:
    made: list[Executor] = []

    def executor(*args, **kwargs) -> Executor:
        ex = Executor(*args, client=cast(Client, api), _transport=fake.transport, **kwargs)
        made.append(ex)
        return ex
    yield executor
    for ex in made:
        ex.shutdown(wait=False, cancel_futures=True)
        ex._stop.set()


def sent(future) -> str:
    assert future._submitted.wait(WAIT)
    return str(future.task_id)


def test_an_endpoint_set_after_construction_is_where_tasks_go(make, api):
    ex = make()
    assert ex.endpoint_id is None
    with pytest.raises(ValueError, match="no endpoint_id set"):
        ex.submit(square, 2)
    with pytest.raises(ValueError, match="no endpoint_id set"):
        ex.submit_to_registered_function(str(uuid.uuid4()))
    assert api.submits == [] and api.registrations == []  # nothing asked of the broker
    ex.endpoint_id = uuid.UUID(EP1)
    sent(ex.submit(square, 2))
    ex.endpoint_id = EP2  # changed between submits, as Globus Compute allows
    sent(ex.submit(square, 3))
    assert api.submit_endpoints == [EP1, EP2]
    with pytest.raises(ValueError, match="endpoint_id must be a UUID"):
        ex.endpoint_id = "my-laptop"


def test_register_function_binds_ids_and_refuses_a_second_different_one(make, api):
    ex = make(EP1)
    known = str(uuid.uuid4())
    assert ex.register_function(square, function_id=known) == known
    assert api.registrations == []  # bound without a request
    sent(ex.submit(square, 4))
    assert api.submits[0][0]["function_id"] == known
    assert ex.register_function(square, function_id=known) == known
    with pytest.raises(ValueError, match=f"already registered with this Executor as function "
                                         f"{known}"):
        ex.register_function(square)

    def cube(x: int) -> int:
        return x ** 3
    function_id = ex.register_function(cube, description="the third power")
    assert api.registrations == [{"description": "the third power"}]
    sent(ex.submit(cube, 2))
    assert api.submits[-1][0]["function_id"] == function_id
    assert len(api.registrations) == 1  # submit used the Executor's registry


def test_register_function_without_an_endpoint_as_in_globus_computes_pre_registration(make):
    assert uuid.UUID(make().register_function(square))


def test_reload_tasks_with_a_task_group_id_gives_that_groups_futures(make, api, fake):
    group = str(uuid.uuid4())
    ids = api.submit(EP1, [{"payload": ""}] * 2, group)["task_ids"]
    api.finish(ids[0], "done before")
    ex = make()  # Globus Compute code: Executor(), then reload_tasks(task_group_id=...)
    futures = ex.reload_tasks(task_group_id=group)
    assert ex.task_group_id == group and [f.task_id for f in futures] == ids
    assert futures[0].done() and futures[0].result() == "done before"
    fake.stream.deliver([success(ids[1], "streamed after")])
    assert futures[1].result(timeout=WAIT) == "streamed after"
    with pytest.raises(ValueError, match="an Executor reads one group"):
        ex.reload_tasks(task_group_id=str(uuid.uuid4()))
    with pytest.raises(ValueError, match="needs a task group"):
        make().reload_tasks()


def test_globus_compute_keywords_in_their_order(make, api, fake):
    ex = Executor(EP1, cast(Client, api), None, {"num_ranks": 2}, {"queue": "debug"}, "nightly",
                  16, 5671, _transport=fake.transport)
    assert (ex.resource_specification, ex.user_endpoint_config) == (
        {"num_ranks": 2}, {"queue": "debug"})
    assert (ex.label, ex.batch_size, ex.amqp_port) == ("nightly", 16, 5671)
    assert repr(ex) == f"Executor<nightly; endpoint {EP1}>"
    future = ex.submit(square, 2)
    fake.stream.deliver([success(sent(future), 4)])
    assert future.result(timeout=WAIT) == 4
    url = fake.stream.opened[0][0]
    assert url == "amqp://group-reader:s3cret@rabbit.test:5671/%2F"  # amqp_port honoured
    with pytest.raises(ValueError, match="amqp_port"):
        ex.amqp_port = 70000
    ex.shutdown(wait=False)
    ex._stop.set()
    with pytest.raises(TypeError):
        make(EP1, not_a_globus_compute_keyword=1)


@pytest.mark.parametrize("name, value", [
    ("api_burst_limit", 4), ("api_burst_window_s", 16), ("serializer", object()),
    ("result_serializers", ["globus_compute_sdk.serialize.DillDataBase64"]),
])
def test_keywords_without_effect_here_are_accepted_and_announced(make, name, value):
    with pytest.warns(UnusedOption, match=f"{name}=.*has no effect in fnrelay") as caught:
        ex = make(EP1, **{name: value})
    assert caught[0].filename == __file__  # it points at the user's line
    assert getattr(ex, name) is value
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make(EP1)  # without them, nothing is said


def test_with_port_keeps_the_account_and_handles_ipv6():
    assert with_port("amqps://u:p@[::1]:5671/vh", 443) == "amqps://u:p@[::1]:443/vh"
    assert with_port("amqp://h/", 5672) == "amqp://h:5672/"
    assert with_port("amqp://u:p@h:1/", None) == "amqp://u:p@h:1/"


def test_concurrent_first_submits_of_one_function_register_it_once_per_executor(make, api):
    ex = make(EP1)
    barrier = threading.Barrier(4)
    futures = []

    def submit() -> None:
        barrier.wait()
        futures.append(ex.submit(square, 1))
    threads = [threading.Thread(target=submit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(futures) == 4  # no submit failed because another registered the function
    for f in futures:
        sent(f)
    assert len({task["function_id"] for tasks in api.submits for task in tasks}) == 1
