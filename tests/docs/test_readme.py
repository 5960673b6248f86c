"""README.md as written: step 3 of "By hand", typed in one shell of a fresh account."""

from __future__ import annotations

from support.doc_blocks import runnable
from support.doc_shell import terminal


def test_local_up_status_demo_down_in_one_shell():
    [steps] = runnable("README.md")
    with terminal() as term:
        out = term.run(steps)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "failed remotely, as intended" in out.stdout, out.stdout  # examples/demo.py
        assert "dashboard: http://127.0.0.1:" in out.stdout, out.stdout
        assert term.left_running() == []  # `down` stopped everything `up` started
