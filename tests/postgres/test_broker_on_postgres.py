"""The broker's routing, API and direct-path ledger tests (tests/broker), run once more
against a broker or task store whose database is PostgreSQL (the `broker` and `task_store`
fixtures of this folder's conftest)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_BROKER_TESTS = Path(__file__).resolve().parents[1] / "broker"
#: Tests that start brokers of their own on SQLite: nothing to learn about PostgreSQL there.
_SKIP = {"test_tasks_accepted_while_rabbitmq_is_down_go_out_when_it_returns"}
#: From test_api: the ones that exercise the database (ownership, idempotency, constraints).
_API_TESTS = {
    "test_repeated_idempotency_key_returns_the_first_answer",
    "test_unknown_function_or_endpoint_is_404_and_stores_nothing",
    "test_other_users_tasks_are_not_found",
    "test_same_code_registers_to_the_same_id",
}


def _tests_of(name: str, wanted=None) -> dict:  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(f"fnrelay_tests_pg_{name}",
                                                  _BROKER_TESTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return {k: v for k, v in vars(module).items()
            if k.startswith("test_") and callable(v) and k not in _SKIP
            and (wanted is None or k in wanted)}


globals().update(_tests_of("test_routing"))
globals().update(_tests_of("test_api", _API_TESTS))
globals().update(_tests_of("test_direct_ledger"))
