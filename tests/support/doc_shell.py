"""A reader's terminal for tests/docs: a fresh HOME, a checkout-like directory whose `.venv`
is the venv running the tests, and the blocks of a page typed one after another in one bash."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fnrelay.devstack.processes import marked_pids
from fnrelay.devstack.rabbitmq import make_shared_tmpdir, rabbitmq_dir_for
from support.doc_blocks import ROOT, Block
from support.stack_processes import left_running


@dataclass
class Terminal:
    home: Path
    checkout: Path
    env: dict[str, str]

    @property
    def default_stack(self) -> Path:
        """Where `fnrelay local up` keeps a stack without FNRELAY_HOME or --dir."""
        return self.home / ".fnrelay" / "local"

    def run(self, *blocks: Block, timeout: float = 150) -> subprocess.CompletedProcess[str]:
        """The blocks' lines in one `bash -e` from the checkout, as typed in one shell."""
        script = "\n".join(b.source for b in blocks)
        return subprocess.run(["bash", "-e", "-c", script], cwd=self.checkout, env=self.env,
                              text=True, capture_output=True, timeout=timeout)

    def left_running(self) -> list[int]:
        return list(marked_pids(str(self.default_stack.resolve())))


@contextmanager
def terminal() -> Iterator[Terminal]:
    """A terminal whose local stack is stopped (and its processes killed) at the end."""
    base = make_shared_tmpdir("fnrelay-docs-")  # RabbitMQ's own user must reach the stack
    checkout = base / "checkout"
    checkout.mkdir()
    (checkout / ".venv").symlink_to(sys.prefix)
    (checkout / "examples").symlink_to(ROOT / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FNRELAY_")}
    # 0700, as /root is: a reader's home is private (RabbitMQ's data then goes under /tmp)
    (base / "home").mkdir(mode=0o700)
    env["HOME"] = str(base / "home")
    term = Terminal(base / "home", checkout, env)
    try:
        yield term
    finally:
        if (term.default_stack / "state.json").exists():
            subprocess.run([str(checkout / ".venv" / "bin" / "fnrelay"), "local", "down"],
                           env=env, capture_output=True, timeout=120)
        for pid in left_running(term.default_stack):  # epmd aside: others share it
            os.kill(pid, 9)
        shutil.rmtree(rabbitmq_dir_for(term.default_stack), ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)
