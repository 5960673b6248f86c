"""docs/quickstart.md as written: its Python samples against a real broker and endpoint, each
printing what the page shows (ids and times compared by shape), and its local-stack shell."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from support.doc_blocks import runnable
from support.doc_shell import terminal

PAGE = "docs/quickstart.md"
SAMPLES = [b for b in runnable(PAGE) if b.kind == "python"]
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
#: What each sample prints, as its comments show it, in order (regular expressions: `<uuid>`,
#: `<host>` and times stand for any such value).
SHOWN = [
    [rf"49 {UUID}", re.escape("[0, 1, 4, 9, 16]")],
    # str() of a remote exception is its remote traceback (the page says so below the sample)
    ["failed remotely: .*", "ZeroDivisionError: division by zero"],
    [rf"0 hello from fnrelay on {re.escape(os.uname().nodename)}"],
    ["3", r"success 3 \d+\.\d+",
     re.escape("['received', 'waiting-for-endpoint', 'running', 'success']"),
     # the page abbreviates each task's record to the keys it names
     r"(?=.*'pending': False)(?=.*'status': 'success')(?=.*'result': 10\b)\{'" + UUID + ".*",
     r"\{'endpoint_id': '" + UUID + r"', 'status': 'online', .*"],
]


def test_the_page_has_the_samples_this_test_checks():
    assert len(SAMPLES) == len(SHOWN)


@pytest.mark.parametrize("sample, shown", list(zip(SAMPLES, SHOWN, strict=False)),
                         ids=[str(b) for b in SAMPLES])
def test_each_sample_prints_what_the_page_shows(sample, shown, endpoint_id, broker_url,
                                               alice_token):
    env = {**os.environ, "FNRELAY_BROKER_URL": broker_url, "FNRELAY_TOKEN": alice_token,
           "FNRELAY_ENDPOINT_ID": endpoint_id}
    out = subprocess.run([sys.executable, "-c", sample.source], env=env, text=True,
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = iter(out.stdout.splitlines())
    for pattern in shown:  # each shown line, in order, among the printed ones
        assert any(re.fullmatch(pattern, line) for line in lines), f"{pattern}\n{out.stdout}"


def test_local_up_then_down_in_one_shell_stops_the_stack():
    """Section 1's `eval "$(... local up)"`, then section 6's `local down`, in one shell."""
    up, down = (b for b in runnable(PAGE) if b.kind == "shell")
    with terminal() as term:
        out = term.run(up, down)
        assert out.returncode == 0, out.stdout + out.stderr
        assert term.left_running() == []  # "stops everything `up` started"
