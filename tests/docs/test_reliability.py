"""docs/reliability.md as written: re-attaching to a task group after a restart."""

from __future__ import annotations

import os
import subprocess
import sys

from support.doc_blocks import runnable


def test_reload_tasks_sample_prints_the_result(endpoint_id, broker_url, alice_token):
    [sample] = runnable("docs/reliability.md")
    env = {**os.environ, "FNRELAY_BROKER_URL": broker_url, "FNRELAY_TOKEN": alice_token,
           "FNRELAY_ENDPOINT_ID": endpoint_id}
    out = subprocess.run([sys.executable, "-c", sample.source], env=env, text=True,
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "[1024]\n"  # as the comment in the sample shows
