"""docs/multi-user.md as written: an administrator sets up, starts and checks a manager, and
renders the scaffold's and the Slurm example's templates."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support.doc_blocks import blocks, page, run_console, runnable

PAGE = "docs/multi-user.md"


def _shell_env(home: Path, broker_url: str, token: str) -> dict[str, str]:
    """A reader's shell: the installed commands on PATH, a fresh FNRELAY_HOME, the token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FNRELAY_")}
    env.update(PATH=f"{Path(sys.executable).parent}:{env['PATH']}", FNRELAY_HOME=str(home),
               FNRELAY_TOKEN=token)
    return env


def _example_files(endpoint_dir: Path) -> None:
    """The schema and template the page's Slurm example shows, where the page says they go."""
    shown = {b.lang: b.source for b in blocks(page(PAGE))}
    (endpoint_dir / "user_config_schema.json").write_text(shown["json"])
    (endpoint_dir / "user_config_template.yaml.j2").write_text(shown["jinja"])


def test_the_administrators_commands_run_as_shown(tmp_path, broker_url, alice_token):
    setup, render, try_it = runnable(PAGE)
    env = _shell_env(tmp_path / "home", broker_url, alice_token)
    urls = {"https://broker.example.org": broker_url}
    try:
        problems = run_console(setup, env, tmp_path, urls)
        problems += run_console(render, env, tmp_path, urls)
        _example_files(tmp_path / "home" / "endpoints" / "hpc")
        problems += run_console(try_it, env, tmp_path, urls)
    finally:
        subprocess.run(["fnrelay-endpoint", "stop", "hpc"], env=env, capture_output=True,
                       timeout=60)
    assert not problems, "\n".join(problems)
