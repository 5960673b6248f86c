"""Globus Compute's serialization for fnrelay's Client (`Client(format="globus-compute")`).

Tasks for an official globus-compute-endpoint must be in Globus Compute's format (it runs
nothing else), so fnrelay's Client serializes them with `globus_compute_sdk.serialize`, the
strategies that endpoint deserializes with. It is imported on first use: clients that never
choose this format need no globus-compute-sdk (and its dill pin).
"""

from __future__ import annotations

from typing import Any

from fnrelay.errors import SerializationError


def _serializer() -> Any:
    try:
        from globus_compute_sdk.serialize import ComputeSerializer
    except ImportError as e:
        raise SerializationError(
            f"format='globus-compute' needs globus-compute-sdk, which is not importable ({e}): "
            "pip install 'fnrelay[globus-compute]'") from None
    return ComputeSerializer()


def function_code(function: Any) -> str:
    """What `POST /v3/functions` takes as `function_code`: one packed buffer."""
    s = _serializer()
    return str(s.pack_buffers([s.serialize(function)]))


def payload(args: tuple, kwargs: dict) -> str:
    """A task's serialized args and kwargs, packed as Globus Compute's submit sends them."""
    s = _serializer()
    return str(s.pack_buffers([s.serialize(args), s.serialize(kwargs)]))


def deserialize(result: str) -> Any:
    """A result the official endpoint serialized (with the default result serializers)."""
    return _serializer().deserialize(result)
