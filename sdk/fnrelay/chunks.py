"""Splitting work into bounded pieces: by count (database IN lists, AMQP batches) or by size
(request and message bodies), so one place decides where a piece ends."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def by_count(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive pieces of at most `size` items."""
    if size < 1:
        raise ValueError(f"chunk size must be positive, got {size}")
    for i in range(0, len(items), size):
        yield items[i : i + size]


def by_size(sizes: Sequence[int], budget: int) -> list[slice]:
    """Consecutive runs of items whose sizes add up to at most `budget`; an item larger than
    the budget makes a run of its own rather than being dropped."""
    runs: list[slice] = []
    start, total = 0, 0
    for i, n in enumerate(sizes):
        if i > start and total + n > budget:
            runs.append(slice(start, i))
            start, total = i, 0
        total += n
    if sizes:
        runs.append(slice(start, len(sizes)))
    return runs
