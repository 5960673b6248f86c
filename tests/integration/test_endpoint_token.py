"""An endpoint runs with an endpoint-scoped token (it cannot submit or read tasks), and its
results reach the user's Executor over its own RabbitMQ account."""

from __future__ import annotations

import requests

from fnrelay import Executor


def test_endpoint_runs_with_an_endpoint_token(broker, client, make_endpoint):
    # An endpoint token cannot create an endpoint: started once with the user's token, the
    # endpoint is created (the broker picks its id), then runs with a token for that id.
    ep = make_endpoint("scoped")
    eid = ep.endpoint_id
    ep.stop()
    out = broker.cli("token", "create", "alice", "--endpoint", eid)
    assert out.returncode == 0, out.stderr
    ep.token = out.stdout.strip().splitlines()[-1]
    ep.start(foreground=True)
    assert ep.endpoint_id == eid

    def double(x):
        return 2 * x

    with Executor(ep.endpoint_id, client=client) as ex:
        assert [f.result(timeout=120) for f in [ex.submit(double, i) for i in range(3)]] == [
            0, 2, 4]
    # The endpoint's token cannot read the tasks it ran.
    r = requests.get(f"{broker.url}/v1/endpoints", timeout=30,
                     headers={"Authorization": f"Bearer {ep.token}"})
    assert r.status_code == 403
