"""Throughput and latency over the last hours as server-rendered SVG: a chart needs no
JavaScript library, and the page stays readable with scripts off."""

from __future__ import annotations

from dataclasses import dataclass

WIDTH, HEIGHT, PAD = 720, 160, 36


@dataclass
class Buckets:
    """Finished tasks per time bucket and their mean latency (completed - created)."""

    start: float
    size: float
    counts: list[int]
    latency: list[float | None]


def bucket(rows: list[tuple[float, float]], start: float, end: float, n: int) -> Buckets:
    """Spread (created, completed) pairs over `n` equal buckets from `start` to `end`."""
    size = (end - start) / n
    counts, sums = [0] * n, [0.0] * n
    for created, completed in rows:
        i = int((completed - start) // size)
        if 0 <= i < n:
            counts[i] += 1
            sums[i] += max(0.0, completed - created)
    latency = [sums[i] / counts[i] if counts[i] else None for i in range(n)]
    return Buckets(start, size, counts, latency)


def _points(values: list[float | None], top: float) -> list[tuple[float, float]]:
    """Plot coordinates of `values` scaled to the chart (None: skipped)."""
    step = (WIDTH - 2 * PAD) / max(1, len(values) - 1)
    return [(PAD + i * step, HEIGHT - PAD - (v / top if top else 0.0) * (HEIGHT - 2 * PAD))
            for i, v in enumerate(values) if v is not None]


def svg(title: str, values: list[float | None], unit: str, hours: float) -> str:
    """A line chart of `values` (oldest first) with its maximum and time axis labelled."""
    top = max((v for v in values if v is not None), default=0.0)
    points = _points(values, top)
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    # a dot per bucket: a lone bucket with tasks shows, where a line needs two
    dots = "".join(f'<circle class="dot" cx="{x:.1f}" cy="{y:.1f}" r="2.5"/>' for x, y in points)
    return (
        f'<svg class="chart" role="img" aria-label="{title}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'xmlns="http://www.w3.org/2000/svg">'
        f'<text x="{PAD}" y="16">{title} (max {top:.3g} {unit})</text>'
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" '
        f'class="axis"/>'
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" class="axis"/>'
        f'<text x="{PAD}" y="{HEIGHT - 12}">-{hours:g} h</text>'
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - 12}" text-anchor="end">now</text>'
        f'<polyline class="line" points="{line}"/>{dots}</svg>')
