"""Which endpoint queues a /metrics pass probes when there are more than it may."""

from __future__ import annotations

from fnrelay_broker.queue_probe import Candidate, chosen


def test_online_endpoints_first_then_by_id_whatever_the_order_given() -> None:
    eps = [Candidate("d", "qd", False), Candidate("c", "qc", True),
           Candidate("a", "qa", False), Candidate("b", "qb", True)]
    assert [c.endpoint_id for c in chosen(eps, 3)] == ["b", "c", "a"]
    assert [c.endpoint_id for c in chosen(list(reversed(eps)), 3)] == ["b", "c", "a"]
    assert chosen(eps, 0) == []
