"""The shared backoff and chunking helpers every party paces and splits its work with."""

from __future__ import annotations

import random

import pytest

from fnrelay import backoff, chunks


def test_backoff_delays_grow_then_stay_under_the_cap_with_a_fixed_lower_half():
    for attempt, ceiling in [(0, 1.0), (1, 2.0), (3, 8.0), (10, 60.0), (10_000, 60.0)]:
        draws = [backoff.delay(attempt, base=1.0, cap=60.0) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in draws)
        assert len(set(draws)) > 1  # jittered: a crowd does not come back in step


def test_drawing_a_delay_leaves_the_users_seeded_random_alone():
    random.seed(42)
    expected = [random.random() for _ in range(3)]
    random.seed(42)
    got = []
    for _ in range(3):
        backoff.delay(2)  # as a reconnecting thread would, between the user's draws
        got.append(random.random())
    assert got == expected


def test_backoff_object_counts_attempts_and_starts_over_after_reset():
    b = backoff.Backoff(base=0.5, cap=30.0)
    assert [b.next_delay() <= c for c in (0.5, 1.0, 2.0)] == [True] * 3
    assert b.attempt == 3
    b.reset()
    assert 0.25 <= b.next_delay() <= 0.5


def test_chunks_by_count_cover_every_item_once_in_order():
    items = list(range(1001))
    pieces = list(chunks.by_count(items, 500))
    assert [len(p) for p in pieces] == [500, 500, 1]
    assert [x for p in pieces for x in p] == items
    assert list(chunks.by_count([], 10)) == []
    with pytest.raises(ValueError):
        list(chunks.by_count(items, 0))


def test_chunks_by_size_keep_runs_within_budget_and_an_oversized_item_alone():
    sizes = [4, 4, 4, 20, 1, 1]
    runs = chunks.by_size(sizes, 10)
    assert [sizes[r] for r in runs] == [[4, 4], [4], [20], [1, 1]]
    assert chunks.by_size([], 10) == []
