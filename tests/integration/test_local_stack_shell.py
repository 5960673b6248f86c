"""`fnrelay local` as README tells a newcomer to use it: in the shell that evaluated
`eval "$(fnrelay local up)"`, in a new shell without it, and from a terminal.

One stack for the module, at its default place (~/.fnrelay/local) under a HOME of its own.
"""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration.test_local_stack import left_running, parse_exports

from fnrelay.devstack.rabbitmq import make_shared_tmpdir, rabbitmq_dir_for
from fnrelay.processes import pid_alive

BIN = Path(sys.executable).parent


def run(*argv: str, env: dict[str, str], **kw: object) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True,
                          timeout=300, env=env, **kw)  # type: ignore[call-overload]


class Stack:
    """The module's stack: `new_shell` has only HOME, `shell` also the lines `up` printed."""

    def __init__(self, home: Path):
        self.home = home
        self.dir = home / ".fnrelay" / "local"
        self.new_shell = {**{k: v for k, v in os.environ.items()
                             if not k.startswith("FNRELAY_")}, "HOME": str(home)}
        self.exports: dict[str, str] = {}

    @property
    def shell(self) -> dict[str, str]:
        return {**self.new_shell, **self.exports}

    def up(self) -> None:
        up = run("fnrelay", "local", "up", env=self.new_shell)
        assert up.returncode == 0, up.stderr
        self.exports = parse_exports(up.stdout)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    base = make_shared_tmpdir("fnrelay-shell-test-")  # an open HOME without ~/.fnrelay yet
    s = Stack(base)
    rabbit = rabbitmq_dir_for(s.dir)  # before `up` makes ~/.fnrelay, as `up` itself asks
    try:
        s.up()
        yield s
    finally:
        if (s.dir / "state.json").exists():
            run("fnrelay", "local", "down", "--dir", str(s.dir), env=s.new_shell)
        for pid in left_running(s.dir):  # not epmd, which other RabbitMQ nodes may use
            os.kill(pid, 9)
        shutil.rmtree(rabbit, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)


def _line_of(output: str, word: str) -> str:
    lines = [line for line in output.splitlines() if word in line.split()]
    assert len(lines) == 1, output
    return lines[0]


def test_a_new_shell_is_pointed_at_the_stack_and_a_terminal_told_to_eval(stack: Stack):
    status = run("fnrelay-endpoint", "status", "default", env=stack.new_shell)
    assert status.returncode == 1
    assert "the local stack has one" in status.stderr, status.stderr
    assert 'eval "$(fnrelay local up)"' in status.stderr
    assert f"FNRELAY_HOME={stack.dir / 'home'}" in status.stderr
    assert "Traceback" not in status.stderr

    # `up` again from a terminal: stdout is a tty, so the lines are not being evaluated
    controller, terminal = pty.openpty()
    try:
        up = subprocess.run([str(BIN / "fnrelay"), "local", "up"], stdout=terminal,
                            stderr=subprocess.PIPE, text=True, timeout=300,
                            env=stack.new_shell)
    finally:
        os.close(terminal)
        os.close(controller)
    assert up.returncode == 0, up.stderr
    assert 'eval "$(fnrelay local up)"' in up.stderr


def test_status_up_and_down_in_the_evaluated_shell_act_on_its_stack(stack: Stack):
    status = run("fnrelay", "local", "status", env=stack.shell)
    assert status.returncode == 0, status.stdout + status.stderr

    again = run("fnrelay", "local", "up", env=stack.shell)
    assert again.returncode == 0, again.stderr
    assert "already up" in again.stderr
    assert parse_exports(again.stdout) == stack.exports
    assert not (stack.dir / "home" / "local").exists()  # no stack nested in the first

    # a further endpoint, as README invites, in that shell
    assert run("fnrelay-endpoint", "configure", "extra", env=stack.shell).returncode == 0
    start = run("fnrelay-endpoint", "start", "extra", env=stack.shell)
    assert start.returncode == 0, start.stderr
    pids = [int((stack.dir / "home" / "endpoints" / name / "endpoint.pid").read_text())
            for name in ("default", "extra")]
    listed = run("fnrelay", "local", "status", env=stack.shell)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert _line_of(listed.stdout, "name=extra").split()[:2] == ["endpoint", "running"]

    down = run("fnrelay", "local", "down", env=stack.shell)
    assert down.returncode == 0, down.stderr
    assert "is down" in down.stderr
    assert not any(pid_alive(p) for p in pids)
    assert left_running(stack.dir) == []
    stopped = run("fnrelay", "local", "status", env=stack.shell)
    assert stopped.returncode == 1
    assert _line_of(stopped.stdout, "name=extra").split()[:2] == ["endpoint", "stopped"]
