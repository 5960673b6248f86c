"""The hardware report `Client.get_worker_hardware_details` runs on an endpoint's worker.

It lives in fnrelay (installed on every endpoint) so it travels by reference: the worker
imports it instead of unpickling code.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import sys

#: Commands whose output describes a node, each shown only where it is installed.
COMMANDS = (["lscpu"], ["nvidia-smi", "-L"], ["free", "-h"], ["df", "-h", "."])


def _command_section(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        return f"== {' '.join(argv)} ==\nfailed: {e}"
    return f"== {' '.join(argv)} ==\n{(done.stdout or done.stderr).rstrip()}"


def run_hardware_report() -> str:
    """Text describing the node this runs on: host, OS, Python, CPUs, memory, GPUs, disk."""
    lines = [
        "== host ==",
        f"hostname: {socket.gethostname()}",
        f"platform: {platform.platform()}",
        f"python: {sys.version.split()[0]} ({sys.executable})",
        f"cpus: {os.cpu_count()}",
    ]
    sections = ["\n".join(lines)]
    sections += [s for s in map(_command_section, COMMANDS) if s]
    return "\n\n".join(sections) + "\n"
