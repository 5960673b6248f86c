"""The processes a local stack (`fnrelay local up --dir DIR`) left running."""

from __future__ import annotations

from pathlib import Path

from fnrelay.devstack.processes import marked_pids


def left_running(stack_dir: Path) -> list[int]:
    """Processes the stack in `stack_dir` started that still run, but for epmd (Erlang's port
    mapper: the other RabbitMQ nodes on the machine, another pytest worker's among them,
    share it, so a clean-up must not kill it either)."""
    def comm(pid: int) -> str | None:
        try:
            return Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return None  # gone meanwhile

    return [p for p in marked_pids(str(stack_dir.resolve())) if comm(p) not in (None, "epmd")]
