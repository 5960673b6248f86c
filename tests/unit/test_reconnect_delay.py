"""The SDK's AMQP reconnect delays: exponential, capped, jittered."""

from fnrelay.executor import RECONNECT_BASE, RECONNECT_CAP, reconnect_delay


def test_delays_grow_exponentially_up_to_the_cap_with_jitter():
    for attempt in range(12):
        nominal = min(RECONNECT_CAP, RECONNECT_BASE * 2**attempt)
        delays = {reconnect_delay(attempt) for _ in range(50)}
        assert all(nominal / 2 <= d <= nominal for d in delays)
        assert len(delays) > 1  # jittered: clients that failed together spread out
    assert reconnect_delay(10_000) <= RECONNECT_CAP
