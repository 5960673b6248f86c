"""Globus Compute's Executor keywords that have no effect here, and the notice they get.

Code written for globus_compute_sdk passes them; refusing them (TypeError) would break that
code, and taking them without a word would let its author believe they act. So each is
accepted, kept as given, and announced where it is given with a warning of its own category,
which a user who has read it can silence:
``warnings.filterwarnings("ignore", category=fnrelay.executor.UnusedOption)``.
"""

from __future__ import annotations

import warnings
from typing import Any

from fnrelay.ignored import IgnoredOptionWarning


class UnusedOption(IgnoredOptionWarning):
    """A Globus Compute keyword of the Executor that fnrelay accepts but does not act on (a
    kind of `IgnoredOptionWarning`, so one filter silences the Client's and the Executor's)."""


#: Why each keyword has no effect here, in one line.
WHY = {
    "api_burst_limit": "fnrelay sends one submit request at a time and batches what comes "
                       "in meanwhile, so there is no burst to limit",
    "api_burst_window_s": "fnrelay sends one submit request at a time and batches what comes "
                          "in meanwhile, so there is no burst to limit",
    "serializer": "fnrelay serializes with its own header-tagged strategies (dill, JSON, "
                  "source), chosen per value",
    "result_serializers": "results come back in fnrelay's own serialization, which the SDK "
                          "reads whatever the endpoint chose",
}


def notice(name: str, value: Any) -> None:
    """Warn that keyword `name` (given as `value`) has no effect; nothing for None. Call it
    straight from the method the user called: the warning names the user's line."""
    if value is None:
        return
    warnings.warn(f"Executor({name}=...) has no effect in fnrelay: {WHY[name]}", UnusedOption,
                  stacklevel=3)
