"""An Executor on the direct path from its first task.

An Executor sends over REST until the direct path's connection is open (a fresh process's
first call need not wait out AMQP's connection set-up), so a test about the direct path
itself waits for that connection before it submits.
"""

from __future__ import annotations

from fnrelay import Executor


def direct_ready(ex: Executor, timeout: float = 60.0) -> Executor:
    """`ex` with its task group attached and the direct path's connection open, as it is a
    moment after its first submit. Its endpoint must be one the user owns (the group is then
    granted the direct path), else this times out."""
    ex._start_submitter(ex._check_endpoint())
    assert ex._submitter._direct_up.wait(timeout), "the direct path's connection did not open"
    return ex
