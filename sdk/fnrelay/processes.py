"""Process liveness, shared by the endpoint's daemons and the local stack.

It lives outside `fnrelay.devstack` because daemons may import it: it loads nothing beyond the
standard library.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeGuard


def pid_alive(pid: int | None) -> TypeGuard[int]:
    """True if process `pid` runs.

    A zombie counts as gone: it runs nothing and only waits for its parent. A process of
    another user counts as running (signal 0 answers EPERM), also where /proc hides it
    (hidepid). Nothing is reaped here: a caller's Popen keeps its child's exit status.
    """
    if pid is None or pid <= 0:  # 0 and negative numbers name process groups to os.kill
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # signal 0 found it; /proc hides it, or it exited since: callers poll
    return state != "Z"
