"""docs/hpc.md as written: its Slurm endpoint config and its Python sample, on a real Slurm."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from support.doc_blocks import blocks, page, runnable


def test_the_sample_runs_on_the_pages_endpoint_config(slurm_cluster, make_endpoint, broker_url,
                                                      alice_token):
    config = next(b for b in blocks(page("docs/hpc.md")) if b.lang == "yaml")
    # The page's poll_interval (30 s) suits a site; polled that slowly, the test would wait.
    engine = {**yaml.safe_load(config.source)["engine"], "poll_interval": 0.5}
    ep = make_endpoint("cluster", engine=engine)
    [sample] = runnable("docs/hpc.md")
    env = {**os.environ, "FNRELAY_BROKER_URL": broker_url, "FNRELAY_TOKEN": alice_token,
           "FNRELAY_ENDPOINT_ID": ep.endpoint_id}
    out = subprocess.run([sys.executable, "-c", sample.source], env=env, text=True,
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr
    # "the node's name, twice"
    assert out.stdout.split() == [os.uname().nodename] * 2
