"""A real one-node Slurm cluster in a temp dir, for tests of the batch engine.

Recipe (Debian bookworm: `apt-get install slurm-wlm munge`; run as root):

1. munged: a fresh random key in `<dir>/munge/munge.key` (mode 0400, owned by the user that
   runs munged, here root), started in the foreground with its own socket, pid, log and seed
   files under `<dir>/munge/`. Slurm finds it through `AuthInfo=socket=<socket>`.
2. slurm.conf (see `_slurm_conf`): this host as controller and only node, free ports for
   slurmctld and slurmd, every state/spool/pid/log path under `<dir>`, `SlurmUser=root`,
   no cgroups (`ProctrackType=proctrack/linuxproc`, `TaskPlugin=task/none`), and
   `SelectType=select/cons_tres` + `CR_CPU` with `CPUs=8` and `SlurmdParameters=config_overrides`
   so that several jobs run at once on a 2-core machine. No slurmdbd (so no `sacct`),
   `MinJobAge` small so finished jobs leave slurmctld's memory quickly, two partitions
   (`debug`, the default, and `batch`), `ReturnToService=2`.
3. `slurmctld -D -f conf` and `slurmd -D -f conf -N <node>` as child processes, each in its
   own session; `SLURM_CONF` is exported so that sbatch/squeue/scontrol/scancel/srun find the
   cluster. `start()` returns once `sinfo` shows the node idle.
4. `stop()` cancels the jobs left, then stops slurmd, slurmctld and munged.

Every run uses a new dir and new ports, so processes leaked by an earlier run do not interfere.
Unix socket paths are limited to 108 bytes: keep `dir` short (e.g. `tempfile.mkdtemp()`).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from fnrelay.devstack.processes import free_port

REQUIRED_TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol")
APT_PACKAGES = "slurm-wlm munge"


class SlurmClusterError(RuntimeError):
    """The cluster could not be started; the message holds the daemons' log tails."""


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class SlurmCluster:
    """munged + slurmctld + slurmd on this host, configured entirely under `root`."""

    def __init__(self, root: str | os.PathLike, cpus: int = 8, min_job_age: int = 2,
                 partitions: tuple[str, ...] = ("debug", "batch"),
                 extra_conf: tuple[str, ...] = ()):
        self.root = Path(root).resolve()
        self.extra_conf = extra_conf  # slurm.conf lines a test needs (e.g. a Prolog)
        self.cpus = cpus
        self.min_job_age = min_job_age
        self.partitions = partitions
        self.node = socket.gethostname()
        self.cluster_name = "fnr" + secrets.token_hex(3)
        self.conf = self.root / "etc" / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.sock"
        self.procs: dict[str, subprocess.Popen] = {}
        self._old_slurm_conf: str | None = None

    # --- public --------------------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        """Environment for Slurm client commands run against this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    @property
    def default_partition(self) -> str:
        return self.partitions[0]

    def start(self, timeout: float = 60) -> SlurmCluster:
        missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
        if missing:
            raise SlurmClusterError(
                f"Slurm test cluster needs {', '.join(missing)}: apt-get install {APT_PACKAGES}")
        if os.geteuid() != 0:
            raise SlurmClusterError("the Slurm test cluster must run as root (SlurmUser=root)")
        try:
            self._write_files()
            self._start_munge(timeout)
            self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
            self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf), "-N", self.node])
            self._wait_idle(timeout)
        except BaseException:
            self.stop()
            raise
        self._old_slurm_conf = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = str(self.conf)
        return self

    def stop(self) -> None:
        """Cancel remaining jobs, then stop the daemons; safe to call twice."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self._cancel_all_jobs()
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc is not None:
                _terminate(proc)
        if self._old_slurm_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = self._old_slurm_conf
        self._old_slurm_conf = None

    def run(self, *argv: str, check: bool = True, timeout: float = 30) -> str:
        """Run a Slurm client command against this cluster; its stdout."""
        out = subprocess.run(list(argv), env=self.env, capture_output=True, text=True,
                             timeout=timeout)
        if check and out.returncode != 0:
            raise SlurmClusterError(f"{argv[0]} failed ({out.returncode}): {out.stderr.strip()}")
        return out.stdout

    def logs(self) -> str:
        """Tails of all daemon logs, for error messages."""
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            parts.append(f"--- {path.name}\n{_tail(path)}")
        return "\n".join(parts)

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- set-up --------------------------------------------------------------------------
    def _write_files(self) -> None:
        for sub in ("etc", "munge", "state", "spool", "log", "run"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "munge", 0o700)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        os.chmod(key, 0o400)
        self.conf.write_text(self._slurm_conf())
        # 22.05 reads cgroup.conf next to slurm.conf if present; with linuxproc/task none it is
        # not needed, but an explicit file keeps a system-wide one from leaking in.
        (self.conf.parent / "cgroup.conf").write_text("CgroupAutomount=no\n")

    def _slurm_conf(self) -> str:
        r = self.root
        lines = [
            f"ClusterName={self.cluster_name}",
            f"SlurmctldHost={self.node}",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'run' / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'run' / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SwitchType=switch/none",
            "MpiDefault=none",
            "SchedulerType=sched/builtin",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "SlurmdParameters=config_overrides",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "ReturnToService=2",
            f"MinJobAge={self.min_job_age}",
            "KillWait=2",
            "InactiveLimit=0",
            "Waittime=0",
            "MessageTimeout=10",
            "SlurmdTimeout=300",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory=1024 "
            "State=UNKNOWN",
        ]
        for i, name in enumerate(self.partitions):
            default = "YES" if i == 0 else "NO"
            lines.append(f"PartitionName={name} Nodes=ALL Default={default} MaxTime=INFINITE "
                         "State=UP")
        lines.extend(self.extra_conf)
        return "\n".join(lines) + "\n"

    def _start_munge(self, timeout: float) -> None:
        m = self.root / "munge"
        self._spawn("munged", [
            "munged", "--foreground", "--force", f"--socket={self.munge_socket}",
            f"--key-file={m / 'munge.key'}", f"--pid-file={m / 'munged.pid'}",
            f"--log-file={self.root / 'log' / 'munged.log'}", f"--seed-file={m / 'munged.seed'}",
        ])
        self._wait_for(lambda: self.munge_socket.exists(), timeout, "munged socket")

    def _spawn(self, name: str, argv: list[str]) -> None:
        out = open(self.root / "log" / f"{name}.out", "ab")  # the child keeps its own copy
        try:
            self.procs[name] = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.env, start_new_session=True)
        finally:
            out.close()

    def _wait_idle(self, timeout: float) -> None:
        def idle() -> bool:
            out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env,
                                 capture_output=True, text=True, timeout=15)
            return out.returncode == 0 and out.stdout.split() and all(
                s.rstrip("*") == "idle" for s in out.stdout.split())

        self._wait_for(idle, timeout, "the node to become idle")

    def _wait_for(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                why = f"{', '.join(dead)} exited" if dead else f"timed out after {timeout}s"
                raise SlurmClusterError(f"waiting for {what}: {why}\n{self.logs()}")
            time.sleep(0.2)

    def _cancel_all_jobs(self) -> None:
        """scancel every job and wait (briefly) until slurmctld has none left running."""
        try:
            self.run("scancel", "--full", "--user=root", check=False, timeout=10)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                left = self.run("squeue", "-h", "-o", "%i", check=False, timeout=10).split()
                if not left:
                    return
                time.sleep(0.3)
        except (subprocess.TimeoutExpired, OSError):
            pass


def _terminate(proc: subprocess.Popen, grace: float = 10) -> None:
    """SIGTERM the process's session, then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)
