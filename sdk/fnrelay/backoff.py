"""The one retry pacing of fnrelay: exponential, capped, with "equal jitter".

Every party that reconnects after an outage (Executors, endpoints, managers, the broker's
publisher) draws its delay from [d/2, d], where d = base * 2**attempt capped at `cap`: the
half that is fixed keeps a crowd from hammering a server that just came back, the random
half keeps that crowd from coming back in step.
"""

from __future__ import annotations

import random

#: Its own generator: fnrelay's threads draw delays while the user's code runs, and must not
#: move the global one a user may have seeded for a reproducible run.
_RANDOM = random.Random()
#: 2**30 seconds is beyond any cap; larger exponents would only risk an OverflowError.
_MAX_EXPONENT = 30


def delay(attempt: int, base: float = 1.0, cap: float = 60.0) -> float:
    """Seconds to wait before retry `attempt` (0-based)."""
    ceiling = min(cap, base * 2 ** min(max(attempt, 0), _MAX_EXPONENT))
    return _RANDOM.uniform(ceiling / 2, ceiling)


class Backoff:
    """`delay` with the attempt counted for the caller, reset after a success."""

    def __init__(self, base: float = 1.0, cap: float = 60.0):
        self.base, self.cap, self.attempt = base, cap, 0

    def next_delay(self) -> float:
        value = delay(self.attempt, self.base, self.cap)
        self.attempt += 1
        return value

    def reset(self) -> None:
        self.attempt = 0
