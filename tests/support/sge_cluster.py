"""A real one-host Son of Grid Engine (Debian's gridengine-master/-exec/-client, SGE 8.1.9).

Debian's packages fix the cell's root (/var/lib/gridengine, cell `default`) and its ports
(sge_qmaster 6444, sge_execd 6445 in /etc/services): one cell per machine, so one per test
session. The packages' postinst creates the spool database; this module does the rest of a
one-host set-up, each step idempotent:

- `act_qmaster` names this host, and `host_aliases` makes the names its address resolves to
  (`localhost` where the host name maps to 127.0.0.1) the same host: otherwise qmaster refuses
  every client with "client IP resolved to host name localhost. This is not identical to
  clients host name".
- the host is an admin, submit (`qconf -as`) and execution host; the global configuration
  allows root's jobs (`min_uid 0`, the tests run as root) and writes accounting at once (qacct
  reads finished jobs); the scheduler runs every second (`schedule_interval 0:0:1`).
- one queue, `fnrelay.q`, 4 slots, `pe_list NONE` (Debian ships no PE until `qconf -Ap`), no
  load thresholds (other test processes load the machine).
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path("/var/lib/gridengine")
CELL = "default"
QUEUE = "fnrelay.q"
SLOTS = 4


class SGECell:
    """The machine's Grid Engine cell, started (and stopped) by this object when it was not
    running already."""

    def __init__(self) -> None:
        self.host = socket.gethostname()
        self.common = ROOT / CELL / "common"
        self.started_here = False

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SGE_ROOT": str(ROOT), "SGE_CELL": CELL}

    def run(self, *argv: str, check: bool = True, stdin: str | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess:
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, input=stdin,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): "
                               f"{proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    # --- life -------------------------------------------------------------------------------
    def start(self, timeout: float = 60) -> SGECell:
        if not (self.common / "bootstrap").is_file():
            raise RuntimeError(f"no Grid Engine cell in {ROOT / CELL}: install gridengine-master "
                               "gridengine-exec gridengine-client (make test-deps)")
        os.environ.update(SGE_ROOT=str(ROOT), SGE_CELL=CELL)
        self._write_host_files()
        if not self._qmaster_answers():
            self.run("/usr/sbin/sge_qmaster")
            self.started_here = True
            self._wait_for(self._qmaster_answers, timeout, "sge_qmaster to answer")
        self._configure()
        if not self._execd_reports():
            self.run("/usr/sbin/sge_execd")
            self.started_here = True
            self._wait_for(self._execd_reports, timeout, "sge_execd to report its load")
        return self

    def stop(self) -> None:
        """Delete every job; stop the daemons if this object started them."""
        self.run("qdel", "-u", "*", check=False)
        if self.started_here:
            self.run("qconf", "-ke", self.host, check=False)
            self.run("qconf", "-km", check=False)
            self._wait_for(lambda: not self._qmaster_answers(), 30, "sge_qmaster to stop")
            self.started_here = False

    # --- set-up steps ---------------------------------------------------------------------
    def _write_host_files(self) -> None:
        (self.common / "act_qmaster").write_text(self.host + "\n")
        names = {self.host, "localhost"}
        try:
            names.add(socket.gethostbyaddr(socket.gethostbyname(self.host))[0])
        except OSError:
            pass
        names.discard(self.host)
        (self.common / "host_aliases").write_text(" ".join([self.host, *sorted(names)]) + "\n")

    def _configure(self) -> None:
        self.run("qconf", "-ah", self.host, check=False)  # "already exists" is fine
        self.run("qconf", "-as", self.host, check=False)
        global_conf = self.run("qconf", "-sconf", "global").stdout
        lines = []
        for line in global_conf.replace("\\\n", " ").splitlines():
            key = line.split(" ", 1)[0]
            if key in ("min_uid", "min_gid"):
                line = f"{key} 0"
            elif key == "reporting_params":
                line = ("reporting_params accounting=true reporting=false flush_time=00:00:00 "
                        "accounting_flush_time=00:00:00 joblog=false sharelog=00:00:00")
            lines.append(line)
        self._from_file("-Mconf", "global", "\n".join(lines) + "\n")
        sched = self.run("qconf", "-ssconf").stdout.splitlines()
        sched = ["schedule_interval 0:0:1" if line.startswith("schedule_interval") else line
                 for line in sched]
        self._from_file("-Msconf", "sched", "\n".join(sched) + "\n")
        if self.run("qconf", "-se", self.host, check=False).returncode != 0:
            self._from_file("-Ae", "exechost", f"hostname {self.host}\nload_scaling NONE\n"
                            "complex_values NONE\nuser_lists NONE\nxuser_lists NONE\n"
                            "projects NONE\nxprojects NONE\nusage_scaling NONE\n"
                            "report_variables NONE\n")
        queue = (f"qname {QUEUE}\nhostlist {self.host}\nseq_no 0\nload_thresholds NONE\n"
                 "suspend_thresholds NONE\nnsuspend 1\nsuspend_interval 00:05:00\npriority 0\n"
                 "min_cpu_interval 00:05:00\nprocessors UNDEFINED\nqtype BATCH INTERACTIVE\n"
                 "ckpt_list NONE\npe_list NONE\nrerun FALSE\n"
                 f"slots {SLOTS}\ntmpdir /tmp\nshell /bin/bash\nprolog NONE\nepilog NONE\n"
                 "shell_start_mode posix_compliant\nstarter_method NONE\nsuspend_method NONE\n"
                 "resume_method NONE\nterminate_method NONE\nnotify 00:00:60\nowner_list NONE\n"
                 "user_lists NONE\nxuser_lists NONE\nsubordinate_list NONE\n"
                 "complex_values NONE\nprojects NONE\nxprojects NONE\ncalendar NONE\n"
                 "initial_state default\n" + "".join(
                     f"{k} INFINITY\n" for k in ("s_rt", "h_rt", "s_cpu", "h_cpu", "s_fsize",
                                                 "h_fsize", "s_data", "h_data", "s_stack",
                                                 "h_stack", "s_core", "h_core", "s_rss",
                                                 "h_rss", "s_vmem", "h_vmem")))
        exists = self.run("qconf", "-sq", QUEUE, check=False).returncode == 0
        self._from_file("-Mq" if exists else "-Aq", QUEUE, queue)
        self.run("qmod", "-c", f"{QUEUE}@{self.host}", check=False)  # clear an error state

    def _from_file(self, flag: str, name: str, text: str) -> None:
        """qconf -Mconf/-Aq/...: the object's name is the file's name."""
        with tempfile.TemporaryDirectory(prefix="fnsge-") as d:
            path = Path(d) / name
            path.write_text(text)
            self.run("qconf", flag, str(path))

    # --- probes -----------------------------------------------------------------------------
    def _probe(self, *argv: str) -> subprocess.CompletedProcess | None:
        """A client command that may hang while a daemon starts or stops: no answer in 10 s
        is "not up" (the callers wait and ask again), not an error."""
        try:
            return self.run(*argv, check=False, timeout=10)
        except subprocess.TimeoutExpired:
            return None

    def _qmaster_answers(self) -> bool:
        proc = self._probe("qconf", "-sh")
        return proc is not None and proc.returncode == 0

    def _execd_reports(self) -> bool:
        proc = self._probe("qstat", "-f", "-q", QUEUE)
        out = proc.stdout if proc is not None else ""
        rows = [line.split() for line in out.splitlines() if line.startswith(f"{QUEUE}@")]
        return bool(rows) and all(len(r) >= 4 and r[3] != "-NA-" and
                                  (len(r) < 6 or "u" not in r[5]) for r in rows)

    @staticmethod
    def _wait_for(ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"gave up waiting for {what}")
            time.sleep(0.5)
