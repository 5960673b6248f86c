"""The admin's prelude runs as a login session would run it, not under the job's ``set -eu``.

Real preludes source a bashrc that tests ``$PS1`` (Debian's /etc/bash.bashrc, RHEL's
/etc/bashrc) or activate conda, whose activate.d scripts read unset variables: both die under
``set -u``. A failing prelude line still stops the job before the command, naming the line.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from fnrelay_endpoint.engines.batch.templating import batch_context, render_batch_script
from fnrelay_endpoint.engines.resources import ResourceSpecification

#: What Debian's /etc/bash.bashrc and RHEL's /etc/bashrc begin with, plus a conda
#: activate.d-style script that reads variables nobody set.
BASHRC = """\
[ -z "$PS1" ] && return
echo interactive-only
"""
ACTIVATE_D = """\
if [ -n "$FNRELAY_TEST_OLD_PATH" ]; then echo restoring; fi
export FNRELAY_TEST_ACTIVATED="${FNRELAY_TEST_ACTIVATED}yes"
false
"""


def run(tmp_path: Path, pre_exec: list[str], command: list[str]
        ) -> tuple[subprocess.CompletedProcess, Path]:
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    spec = ResourceSpecification.from_task({}, {"pre_exec": pre_exec})
    text = render_batch_script("slurm", batch_context(
        "slurm", "t-1", str(sandbox), spec, spec.launch_chain(str(sandbox)), command))
    script = tmp_path / "job.sh"
    script.write_text(text)
    proc = subprocess.run(["bash", str(script)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    return proc, sandbox


def test_prelude_sourcing_a_bashrc_and_activate_d_scripts_reaches_the_command(tmp_path):
    (tmp_path / "bashrc").write_text(BASHRC)
    (tmp_path / "activate.sh").write_text(ACTIVATE_D)
    proc, sandbox = run(tmp_path, [f"source {tmp_path}/bashrc",
                                   f"source {tmp_path}/activate.sh; true"],
                        ["sh", "-c", 'echo "activated=$FNRELAY_TEST_ACTIVATED"'])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["activated=yes"]
    assert (sandbox / "exit_status").read_text() == "0\n"


def test_a_failing_prelude_line_stops_the_job_and_names_the_line(tmp_path):
    proc, sandbox = run(tmp_path, ["echo first", "module-that-is-missing load x", "echo later"],
                        ["touch", "ran"])
    assert proc.returncode == 127
    assert proc.stdout.splitlines() == ["first"]
    assert "fnrelay: job set-up failed (exit 127): module-that-is-missing load x" in proc.stderr
    assert (sandbox / "exit_status").read_text() == "127\n"
    assert not (sandbox / "ran").exists()
