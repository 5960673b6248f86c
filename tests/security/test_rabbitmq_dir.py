"""As root, RabbitMQ (user rabbitmq) must reach its data directory on the very first
`fnrelay local up`, whatever HOME is, while ~/.fnrelay stays private."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from fnrelay.config import private_mkdir
from fnrelay.devstack.rabbitmq import RABBITMQ_USER, make_shared_tmpdir, rabbitmq_dir_for


def _rabbitmq_can_enter(path: Path) -> bool:
    return subprocess.run(["runuser", "-u", RABBITMQ_USER, "--", "test", "-x", str(path)],
                          capture_output=True).returncode == 0


def test_first_stack_in_a_fresh_open_home_puts_rabbitmq_data_where_rabbitmq_reaches():
    assert os.geteuid() == 0, "this test checks root's behaviour"
    home = make_shared_tmpdir("fnrelay-fresh-home-")  # 0755, no ~/.fnrelay yet
    base = home / ".fnrelay" / "local"
    rabbit = rabbitmq_dir_for(base)
    try:
        private_mkdir(base)  # as `fnrelay local up` does next
        assert (home / ".fnrelay").stat().st_mode & 0o077 == 0
        if rabbit.parent == base.resolve():
            assert _rabbitmq_can_enter(base.parent), f"{RABBITMQ_USER} cannot reach {rabbit}"
        else:
            assert _rabbitmq_can_enter(rabbit.parent)
    finally:
        shutil.rmtree(home, ignore_errors=True)
        if not rabbit.is_relative_to(home):
            shutil.rmtree(rabbit, ignore_errors=True)
