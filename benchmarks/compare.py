"""`python -m benchmarks.compare`: is revision AFTER as fast as revision BEFORE on this machine?

Each revision is checked out into a git worktree of its own, and the harness (`python -m
benchmarks`, fnrelay's phase by default) runs alternately for the two in ABBA order, so that a
machine which slowly gets busier or quieter (drift) weighs on both sides alike. Every run is a
fresh subprocess whose PYTHONPATH is that worktree's sdk/broker/endpoint/wrappers: the shared
venv's editable install points at one checkout, and the broker and endpoint the harness starts
inherit the path. Each side runs its own revision's harness, since the stack code the harness
starts moves with the layout; the method (phases, counts, task) must be the same in both. The
verdict compares per-revision medians against issue 17's bounds:
throughput at least 0.95x and p50 latency at most 1.10x of BEFORE's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from benchmarks.harness import PHASES, log
from benchmarks.report import _fmt, _table
from benchmarks.stats import percentile

ROOT = Path(__file__).resolve().parents[1]
BEFORE, AFTER = "before", "after"
#: Issue 17's "no regression": after/before of the medians.
THROUGHPUT_MIN_RATIO = 0.95
P50_MAX_RATIO = 1.10
#: The source folders each revision's processes import from, before the venv's editable install.
SOURCE_DIRS = (".", "sdk", "broker", "endpoint", "wrappers")
PACKAGES = ("fnrelay", "fnrelay_broker", "fnrelay_endpoint", "fnrelay_wrappers")
STOP_GRACE = 120.0  # seconds a stopped harness gets to take its stack down


class RunFailed(RuntimeError):
    """A harness run exited non-zero, reported an error or a wrong result."""


@dataclass(frozen=True)
class Revision:
    label: str  # BEFORE or AFTER
    rev: str  # as given on the command line
    commit: str
    tree: Path  # its worktree


def abba_order(runs: int) -> list[str]:
    """BEFORE/AFTER labels for `runs` runs of each: AB BA AB BA ..., so a linear drift of the
    machine favours neither side over each pair of rounds."""
    order: list[str] = []
    for i in range(runs):
        order += [BEFORE, AFTER] if i % 2 == 0 else [AFTER, BEFORE]
    return order


def metrics(result: dict[str, Any]) -> dict[str, float]:
    """fnrelay's throughput and p50 from one harness result; a run with an error or a wrong
    answer counts as no measurement at all."""
    if result.get("errors"):
        raise RunFailed(f"the harness reported errors: {result['errors']}")
    fnrelay = result.get("fnrelay") or {}
    latency, throughput = fnrelay.get("latency") or {}, fnrelay.get("throughput") or {}
    if latency.get("correct") is not True or throughput.get("correct") is not True:
        raise RunFailed("fnrelay returned wrong results (or did not run)")
    return {"tasks_per_s": float(throughput["tasks_per_s"]), "p50_ms": float(latency["p50_ms"])}


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def verdict(samples: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    """Per-revision medians, the after/before ratios and whether each is within its bound."""
    med = {label: {key: median([s[key] for s in samples[label]])
                   for key in ("tasks_per_s", "p50_ms")} for label in (BEFORE, AFTER)}
    tp = med[AFTER]["tasks_per_s"] / med[BEFORE]["tasks_per_s"]
    p50 = med[AFTER]["p50_ms"] / med[BEFORE]["p50_ms"]
    checks = {
        "throughput": {"ratio": tp, "bound": f">= {THROUGHPUT_MIN_RATIO}",
                       "within": tp >= THROUGHPUT_MIN_RATIO},
        "p50": {"ratio": p50, "bound": f"<= {P50_MAX_RATIO}", "within": p50 <= P50_MAX_RATIO},
    }
    return {"medians": med, "checks": checks,
            "within": all(c["within"] for c in checks.values())}


def render(summary: dict[str, Any]) -> str:
    """The runs in the order they ran, then the medians and the verdict."""
    revs = summary["revisions"]
    runs = [[str(i + 1), r["label"], revs[r["label"]]["commit"][:10], _fmt(r["tasks_per_s"], 0),
             _fmt(r["p50_ms"], 2), _fmt(r["seconds"], 0), _fmt(r["load1"], 2)]
            for i, r in enumerate(summary["runs"])]
    med, checks = summary["verdict"]["medians"], summary["verdict"]["checks"]
    rows = [[name, _fmt(med[BEFORE][key], digits), _fmt(med[AFTER][key], digits),
             _fmt(checks[check]["ratio"], 3), checks[check]["bound"],
             "within" if checks[check]["within"] else "OUTSIDE"]
            for name, key, check, digits in (("throughput (tasks/s)", "tasks_per_s",
                                              "throughput", 0),
                                             ("latency p50 (ms)", "p50_ms", "p50", 2))]
    head = (f"before = {summary['before']} ({revs[BEFORE]['commit'][:10]}), after = "
            f"{summary['after']} ({revs[AFTER]['commit'][:10]}), {summary['runs_each']} runs "
            f"each, ABBA order, harness {' '.join(summary['harness_args'])}")
    word = "no regression" if summary["verdict"]["within"] else "REGRESSION"
    return "\n".join([
        head, "",
        _table(["run", "revision", "commit", "tasks/s", "p50 ms", "seconds", "load1"], runs),
        "",
        _table(["median", BEFORE, AFTER, "after/before", "bound", "verdict"], rows),
        "", f"verdict: {word} (issue 17: throughput >= {THROUGHPUT_MIN_RATIO}x, "
            f"p50 <= {P50_MAX_RATIO}x)"])


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


@contextmanager
def worktrees(revs: dict[str, str], base: Path) -> Iterator[dict[str, Revision]]:
    """A detached worktree per revision under `base`; removed again however the block ends."""
    made: list[Path] = []
    try:
        out: dict[str, Revision] = {}
        for label, rev in revs.items():
            commit = _git("rev-parse", "--verify", f"{rev}^{{commit}}")
            tree = base / label
            _git("worktree", "add", "--detach", str(tree), commit)
            made.append(tree)
            out[label] = Revision(label, rev, commit, tree)
        yield out
    finally:
        for tree in made:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT,
                           capture_output=True)
        subprocess.run(["git", "worktree", "prune"], cwd=ROOT, capture_output=True)


def environment(tree: Path) -> dict[str, str]:
    """This process's environment with `tree`'s sources first on the import path."""
    paths = [str(tree / d) if d != "." else str(tree) for d in SOURCE_DIRS]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def check_imports(tree: Path) -> None:
    """Each package resolves inside `tree`: otherwise both sides would measure one checkout."""
    code = ("import importlib.util, json; print(json.dumps({n: getattr(importlib.util."
            f"find_spec(n), 'origin', None) for n in {PACKAGES!r}}}))")
    found = json.loads(subprocess.run([sys.executable, "-c", code], cwd=tree,
                                      env=environment(tree), check=True, capture_output=True,
                                      text=True).stdout)
    stray = {name: origin for name, origin in found.items()
             if not str(origin).startswith(str(tree) + os.sep)}
    if stray:
        raise RunFailed(f"not imported from {tree}: {stray}")


def _harness(argv: list[str], tree: Path, stderr: IO[str]) -> int:
    """Run the harness to its end; if this process is stopped meanwhile, the harness gets a
    Ctrl-C first, which takes down the RabbitMQ, broker and endpoint it started (a kill would
    leave them running in their own sessions)."""
    proc = subprocess.Popen(argv, cwd=tree, env=environment(tree), stdout=subprocess.DEVNULL,
                            stderr=stderr)
    try:
        return proc.wait()
    except BaseException:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise


def run_once(rev: Revision, harness_args: list[str], base: Path, index: int) -> dict[str, Any]:
    """One harness run of `rev` in a subprocess; its metrics, wall time and the load before."""
    out = base / f"run-{index:02d}-{rev.label}"
    load1 = os.getloadavg()[0]
    log(f"run {index}: {rev.label} ({rev.rev}, {rev.commit[:10]}), load {load1:.2f}")
    t0 = time.monotonic()
    log_path = base / f"run-{index:02d}-{rev.label}.log"
    with open(log_path, "w") as stderr:
        code = _harness([sys.executable, "-m", "benchmarks", *harness_args, "--no-chart",
                         "--out", str(out)], rev.tree, stderr)
    seconds = time.monotonic() - t0
    latest = out / "latest.json"
    if not latest.exists():
        tail = log_path.read_text()[-3000:]
        raise RunFailed(f"run {index} ({rev.label}) exited {code}, no result:\n{tail}")
    result = json.loads(latest.read_text())
    found = metrics(result)
    log(f"run {index}: {found['tasks_per_s']:,.0f} tasks/s, p50 {found['p50_ms']:.2f} ms, "
        f"{seconds:.0f}s")
    return {"label": rev.label, **found, "seconds": seconds, "load1": load1,
            "cpu_interference": result["machine"].get("cpu_interference"),
            "fnrelay": result["fnrelay"]}


def compare(before: str, after: str, runs: int, harness_args: list[str]) -> dict[str, Any]:
    """Run both revisions `runs` times each, interleaved; the whole record of the comparison."""
    base = Path(tempfile.mkdtemp(prefix="fnrelay-compare-"))
    try:
        with worktrees({BEFORE: before, AFTER: after}, base) as revs:
            for rev in revs.values():
                check_imports(rev.tree)
            records = [run_once(revs[label], harness_args, base, i + 1)
                       for i, label in enumerate(abba_order(runs))]
    finally:
        shutil.rmtree(base, ignore_errors=True)
    samples = {label: [r for r in records if r["label"] == label] for label in (BEFORE, AFTER)}
    return {
        "timestamp": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "before": before, "after": after, "runs_each": runs, "harness_args": harness_args,
        "revisions": {label: {"rev": r.rev, "commit": r.commit} for label, r in revs.items()},
        "cpus": os.cpu_count(), "runs": records, "verdict": verdict(samples)}


def harness_args(a: argparse.Namespace) -> list[str]:
    """The harness options every run gets: fnrelay's phase unless others are asked for."""
    args = [arg for phase in sorted(set(a.only or []) | {"fnrelay"}, key=PHASES.index)
            for arg in ("--only", phase)]
    if a.quick:
        args.append("--quick")
    for flag, value in (("--n-latency", a.n_latency), ("--n-throughput", a.n_throughput),
                        ("--workers", a.workers), ("--timeout", a.timeout)):
        if value is not None:
            args += [flag, str(value)]
    return args


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=(
        "Interleaved before/after runs of the benchmark harness, one git worktree per "
        "revision (see docs/performance.md)."))
    p.add_argument("--before", required=True, help="git revision measured as the baseline")
    p.add_argument("--after", required=True, help="git revision judged against it")
    p.add_argument("--runs", type=int, default=5, help="harness runs of each revision (5)")
    p.add_argument("--quick", action="store_true", help="the harness's --quick counts")
    p.add_argument("--only", action="append", choices=PHASES,
                   help="also run this harness phase (repeatable; fnrelay always runs)")
    p.add_argument("--n-latency", type=int, help="passed to the harness")
    p.add_argument("--n-throughput", type=int, help="passed to the harness")
    p.add_argument("--workers", type=int, help="passed to the harness")
    p.add_argument("--timeout", type=float, help="passed to the harness (seconds per phase)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"),
                   help="where compare-<timestamp>.json goes")
    a = p.parse_args(argv)
    if a.runs < 1:
        p.error("--runs must be at least 1")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    # A SIGTERM unwinds like Ctrl-C, so the worktrees are removed on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        summary = compare(a.before, a.after, a.runs, harness_args(a))
    except (RunFailed, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", None) or ""
        log(f"comparison failed: {e}\n{detail}")
        return 2
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    print(render(summary))
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / f"compare-{summary['timestamp'].replace(':', '')}.json"
    path.write_text(json.dumps(summary, indent=2))
    log(f"wrote {path}")
    return 0 if summary["verdict"]["within"] else 1


if __name__ == "__main__":
    sys.exit(main())
