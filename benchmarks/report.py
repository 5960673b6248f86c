"""Ratios, targets, the printed table and the JSON file of one harness run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: Issue 8's targets: (key, description, ratio or value, comparison, limit, must?).
TARGETS = [
    ("throughput_vs_parsl", "throughput >= 1.5x Parsl HTEX", ">=", 1.5, True),
    ("throughput_vs_amqp", "throughput >= 0.5x raw durable AMQP round trip", ">=", 0.5, False),
    ("p50_vs_parsl", "p50 latency <= 1.5x Parsl HTEX p50", "<=", 1.5, True),
    ("p50_vs_parsl_aim", "p50 latency <= 1x Parsl HTEX p50", "<=", 1.0, False),
    ("p99_vs_p50", "p99 <= 3x p50", "<=", 3.0, True),
    ("broker_rss_stored_mb", "broker RSS <= 200 MB with 100,000 stored tasks", "<=", 200, True),
    ("endpoint_idle_mb", "idle endpoint (agent + workers) <= 80 MB", "<=", 80, True),
]


def _get(d: dict[str, Any] | None, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def ratios(r: dict[str, Any]) -> dict[str, float | None]:
    """fnrelay / Parsl and fnrelay / raw AMQP, for throughput and latency."""
    f_tp, p_tp, a_tp = (_get(r, s, "throughput", "tasks_per_s") for s in ("fnrelay", "parsl",
                                                                           "amqp"))
    f50, p50, a50 = (_get(r, s, "latency", "p50_ms") for s in ("fnrelay", "parsl", "amqp"))
    return {
        "throughput_vs_parsl": _div(f_tp, p_tp),
        "throughput_vs_amqp": _div(f_tp, a_tp),
        "p50_vs_parsl": _div(f50, p50),
        "p50_vs_amqp": _div(f50, a50),
        "p99_vs_p50": _div(_get(r, "fnrelay", "latency", "p99_ms"), f50),
    }


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its measured value and whether it is met (None: not measured here)."""
    values = {**r["ratios"], "p50_vs_parsl_aim": r["ratios"].get("p50_vs_parsl"),
              "broker_rss_stored_mb": _get(r, "memory", "stored", "broker_rss_mb"),
              "endpoint_idle_mb": _get(r, "memory", "endpoint_idle", "tree_rss_mb")}
    stored_full = (_get(r, "memory", "stored", "tasks") or 0) >= 100_000
    out = []
    for key, text, op, limit, must in TARGETS:
        value = values.get(key)
        met = None if value is None else (value >= limit if op == ">=" else value <= limit)
        if key == "broker_rss_stored_mb" and not stored_full:
            met = None  # a --quick run stores fewer tasks: not a verdict on the target
        out.append({"key": key, "target": text, "value": value, "met": met, "must": must})
    return out


def write(r: dict[str, Any], out: Path) -> Path:
    """benchmarks/results/<timestamp>.json and latest.json; returns the first."""
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(r, indent=2, sort_keys=False)
    path = out / f"{r['timestamp'].replace(':', '')}.json"
    path.write_text(text)
    (out / "latest.json").write_text(text)
    return path


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def render(r: dict[str, Any]) -> str:
    """The human-readable report: speed, memory and the issue's targets."""
    systems = ("fnrelay", "parsl", "amqp")
    rows = [["throughput (tasks/s)",
             *(_fmt(_get(r, s, "throughput", "tasks_per_s"), 0) for s in systems),
             _fmt(r["ratios"]["throughput_vs_parsl"], 2),
             _fmt(r["ratios"]["throughput_vs_amqp"], 2)]]
    for q in ("p50", "p90", "p99"):
        f, p, a = (_get(r, s, "latency", f"{q}_ms") for s in systems)
        rows.append([f"latency {q} (ms)", _fmt(f, 2), _fmt(p, 2), _fmt(a, 2),
                     _fmt(_div(f, p), 2), _fmt(_div(f, a), 2)])
    o = r["options"]
    parts = [
        f"fnrelay benchmark {r['timestamp']}  (latency n={o['n_latency']}, throughput "
        f"n={o['n_throughput']}, workers={o['workers']}, cpus={r['machine']['cpus']})",
        *([f"work on one CPU slows a loop on another {cross:.2f}x here (python -m "
           "benchmarks.vcpu; 1.00 = independent CPUs): background work reaches the tail"]
          if (cross := r["machine"].get("cpu_interference")) else []),
        "",
        _table(["", "fnrelay", "Parsl HTEX", "raw AMQP", "fnrelay/Parsl", "fnrelay/AMQP"],
               rows),
    ]
    hop_ms = _get(r, "fnrelay", "hops_ms") or {}
    if hop_ms:
        parts += ["", _table(["one lone task, median per hop", "ms"],
                             [[name, _fmt(ms, 2)] for name, ms in hop_ms.items()])]
    m = r.get("memory") or {}
    if m:
        stored = m.get("stored") or {}
        mem_rows = [
            ["idle endpoint agent RSS (MB)", _fmt(_get(m, "endpoint_idle", "rss_mb"))],
            ["idle endpoint + workers RSS (MB)", _fmt(_get(m, "endpoint_idle", "tree_rss_mb"))],
            ["endpoint agent peak RSS (MB)", _fmt(_get(m, "endpoint_peak", "peak_rss_mb"))],
            ["broker peak RSS after the runs (MB)", _fmt(_get(m, "broker_peak", "peak_rss_mb"))],
            [f"broker RSS with {_fmt(stored.get('tasks'))} stored tasks (MB)",
             _fmt(stored.get("broker_rss_mb"))],
            ["broker peak RSS while storing (MB)", _fmt(stored.get("broker_peak_rss_mb"))],
            ["SQLite database with them (MB)", _fmt(stored.get("db_mb"))],
            ["REST submit rate while storing (tasks/s)", _fmt(stored.get("tasks_per_s"), 0)],
        ]
        parts += ["", _table(["memory", "value"], mem_rows)]
        if stored.get("note"):
            parts.append(f"note: {stored['note']}")
    verdict = {True: "met", False: "MISSED", None: "n/a"}
    parts += ["", _table(["target", "value", "verdict"], [
        [t["target"] + ("" if t["must"] else " [aim]"), _fmt(t["value"], 2), verdict[t["met"]]]
        for t in r["targets"]])]
    for phase, error in (r.get("errors") or {}).items():
        parts.append(f"error in {phase}: {error}")
    return "\n".join(parts)
