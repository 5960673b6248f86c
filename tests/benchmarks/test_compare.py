"""benchmarks.compare without the harness: run order, medians, ratios, bounds and worktrees.

The verdict is what the lead quotes for issue 17, so its arithmetic and its edges (exactly
0.95x throughput and 1.10x p50 still pass) are pinned here; the runs themselves are not timed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from benchmarks import compare
from benchmarks.compare import AFTER, BEFORE, RunFailed

ROOT = Path(__file__).resolve().parents[2]


def samples(before: list[tuple[float, float]], after: list[tuple[float, float]]
            ) -> dict[str, list[dict[str, float]]]:
    """(tasks/s, p50 ms) pairs per revision, shaped like compare's run records."""
    return {label: [{"tasks_per_s": tp, "p50_ms": p50} for tp, p50 in pairs]
            for label, pairs in ((BEFORE, before), (AFTER, after))}


def test_runs_alternate_abba_so_a_linear_drift_cancels():
    assert compare.abba_order(1) == [BEFORE, AFTER]
    assert compare.abba_order(2) == [BEFORE, AFTER, AFTER, BEFORE]
    order = compare.abba_order(5)
    assert order == [BEFORE, AFTER, AFTER, BEFORE] * 2 + [BEFORE, AFTER]
    for runs in (2, 4, 6):
        order = compare.abba_order(runs)
        positions = {label: sum(i for i, x in enumerate(order) if x == label)
                     for label in (BEFORE, AFTER)}
        assert positions[BEFORE] == positions[AFTER], order


def test_medians_and_ratios_of_each_revision():
    result = compare.verdict(samples(
        before=[(1000, 2.0), (3000, 9.0), (2000, 3.0)],
        after=[(2100, 3.1), (500, 3.0), (9000, 2.0), (2000, 4.0)]))
    assert result["medians"][BEFORE] == {"tasks_per_s": 2000, "p50_ms": 3.0}
    assert result["medians"][AFTER] == {"tasks_per_s": 2050, "p50_ms": 3.05}
    assert result["checks"]["throughput"]["ratio"] == pytest.approx(1.025)
    assert result["checks"]["p50"]["ratio"] == pytest.approx(3.05 / 3.0)
    assert result["within"] is True


@pytest.mark.parametrize(("after_tp", "after_p50", "tp_ok", "p50_ok"), [
    (95.0, 11.0, True, True),  # exactly at both bounds
    (94.9, 10.0, False, True),  # throughput just below 0.95x
    (100.0, 11.01, True, False),  # p50 just above 1.10x
    (50.0, 20.0, False, False),
])
def test_bounds_of_issue_17(after_tp, after_p50, tp_ok, p50_ok):
    result = compare.verdict(samples(before=[(100.0, 10.0)], after=[(after_tp, after_p50)]))
    assert result["checks"]["throughput"]["within"] is tp_ok
    assert result["checks"]["p50"]["within"] is p50_ok
    assert result["within"] is (tp_ok and p50_ok)


def harness_result(**changes) -> dict:
    result = {"errors": {}, "machine": {}, "fnrelay": {
        "latency": {"p50_ms": 2.5, "correct": True},
        "throughput": {"tasks_per_s": 3000.0, "correct": True}}}
    result.update(changes)
    return result


def test_metrics_come_from_the_harness_json_and_failed_runs_do_not_count():
    assert compare.metrics(harness_result()) == {"tasks_per_s": 3000.0, "p50_ms": 2.5}
    with pytest.raises(RunFailed, match="errors"):
        compare.metrics(harness_result(errors={"fnrelay": "TimeoutError: ..."}))
    wrong = harness_result()
    wrong["fnrelay"]["throughput"]["correct"] = False
    with pytest.raises(RunFailed, match="wrong results"):
        compare.metrics(wrong)
    with pytest.raises(RunFailed):
        compare.metrics(harness_result(fnrelay=None))


def test_fnrelay_always_runs_and_options_reach_the_harness():
    assert compare.harness_args(compare.parse(["--before", "a", "--after", "b"])) == [
        "--only", "fnrelay"]
    args = compare.harness_args(compare.parse([
        "--before", "a", "--after", "b", "--quick", "--only", "amqp", "--only", "parsl",
        "--workers", "3"]))
    assert args == ["--only", "parsl", "--only", "fnrelay", "--only", "amqp", "--quick",
                    "--workers", "3"]


def test_render_states_the_verdict():
    summary = {
        "before": "a", "after": "b", "runs_each": 1, "harness_args": ["--only", "fnrelay"],
        "revisions": {BEFORE: {"commit": "a" * 40}, AFTER: {"commit": "b" * 40}},
        "runs": [{"label": BEFORE, "tasks_per_s": 100.0, "p50_ms": 10.0, "seconds": 60.0,
                  "load1": 0.5},
                 {"label": AFTER, "tasks_per_s": 90.0, "p50_ms": 10.0, "seconds": 61.0,
                  "load1": 0.5}],
        "verdict": compare.verdict(samples(before=[(100.0, 10.0)], after=[(90.0, 10.0)]))}
    text = compare.render(summary)
    assert "verdict: REGRESSION" in text and "OUTSIDE" in text


def _worktrees() -> str:
    return subprocess.run(["git", "worktree", "list", "--porcelain"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout


def test_a_worktree_imports_its_own_sources_and_is_removed_on_error(tmp_path):
    """The PYTHONPATH a run gets resolves every package inside its worktree, and the worktree
    is gone again when the comparison fails."""
    with pytest.raises(RuntimeError, match="boom"):
        with compare.worktrees({BEFORE: "HEAD"}, tmp_path) as revs:
            tree = revs[BEFORE].tree
            assert str(tree) in _worktrees()
            compare.check_imports(tree)
            raise RuntimeError("boom")
    assert not tree.exists()
    assert str(tree) not in _worktrees()


def test_a_tree_without_the_sources_is_refused(tmp_path):
    """Without its own packages a run would import another checkout's: no silent fallback."""
    with pytest.raises(RunFailed, match="not imported from"):
        compare.check_imports(tmp_path)
