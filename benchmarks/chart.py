"""The PNG chart of one run: throughput and latency of fnrelay, Parsl HTEX and raw AMQP.

`python -m benchmarks.chart RESULT.json OUT.png` redraws it from a saved result.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SYSTEMS = [("fnrelay", "fnrelay"), ("parsl", "Parsl HTEX"), ("amqp", "raw AMQP")]
COLORS = ["#1f77b4", "#ff7f0e", "#7f7f7f"]


def draw(r: dict[str, Any], path: Path) -> Path:
    """Two panels: tasks/s (higher is better) and p50/p90/p99 in ms (lower is better)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    names = [label for _, label in SYSTEMS]
    rates = [((r.get(k) or {}).get("throughput") or {}).get("tasks_per_s") or 0
             for k, _ in SYSTEMS]
    bars = left.bar(names, rates, color=COLORS)
    left.bar_label(bars, fmt="%.0f")
    left.set_title(f"throughput, {r['options']['n_throughput']:,} no-op tasks")
    left.set_ylabel("tasks/s (higher is better)")
    width = 0.25
    for i, (key, label) in enumerate(SYSTEMS):
        lat = (r.get(key) or {}).get("latency") or {}
        xs = [j + (i - 1) * width for j in range(3)]
        b = right.bar(xs, [lat.get(q) or 0 for q in ("p50_ms", "p90_ms", "p99_ms")], width,
                      label=label, color=COLORS[i])
        right.bar_label(b, fmt="%.1f", fontsize=7)
    right.set_xticks(range(3), ["p50", "p90", "p99"])
    right.set_title(f"latency, one task at a time (n={r['options']['n_latency']})")
    right.set_ylabel("ms (lower is better)")
    right.legend()
    fig.suptitle(f"fnrelay benchmark {r['timestamp']} ({r['options']['workers']} workers, "
                 f"{r['machine']['cpus']} CPUs)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m benchmarks.chart RESULT.json OUT.png")
    draw(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))
