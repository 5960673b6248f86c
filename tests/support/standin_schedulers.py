"""Stand-ins for LSF, Flux, HTCondor and PBS Professional, which cannot run here.

Each stand-in is a small executable put first on PATH under the real command's name. The
submit command records its arguments (and LSF's script on stdin), then runs the job script
for real with bash, as the scheduler would on a node, sending its output where the script's
directives say; the status commands answer in the documented output format of the real tool
(see each test's data files) from the exit status the script recorded. They do not queue,
schedule or enforce limits: what they prove is that fnrelay's scripts run and its parsers
read the real tools' formats. The PBS stand-in (standin_pbs.py) runs its jobs in the
background and knows job arrays.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from support import standin_pbs

_COMMON = r'''
import json, os, re, subprocess, sys
from pathlib import Path
STATE = Path(os.environ["FNRELAY_STANDIN_DIR"])
STATE.mkdir(exist_ok=True)

def record(tool, argv, stdin=None):
    with open(STATE / "calls.jsonl", "a") as f:
        f.write(json.dumps({"tool": tool, "argv": argv, "stdin": stdin}) + "\n")

def new_id():
    n = len(list(STATE.glob("*.job"))) + 1
    return str(n)

def run_job(job_id, name, script_path, out, err):
    (STATE / f"{job_id}.job").write_text(json.dumps({"name": name}))
    with open(out or os.devnull, "ab") as o, open(err or os.devnull, "ab") as e:
        rc = subprocess.run(["bash", str(script_path)], stdout=o, stderr=e).returncode
    (STATE / f"{job_id}.rc").write_text(str(rc))

def job(job_id):
    path = STATE / f"{job_id}.job"
    if not path.exists():
        return None
    rc = STATE / f"{job_id}.rc"
    return json.loads(path.read_text())["name"], int(rc.read_text()) if rc.exists() else None

def directive(text, pattern):
    m = re.search(pattern, text, re.MULTILINE)
    return m.group(1) if m else None
'''

_BSUB = r'''
script = sys.stdin.read()
record("bsub", sys.argv[1:], script)
name = sys.argv[sys.argv.index("-J") + 1]
job_id = new_id()
path = STATE / f"{job_id}.sh"
path.write_text(script)
run_job(job_id, name, path, directive(script, r"^#BSUB -o (\S+)"),
        directive(script, r"^#BSUB -e (\S+)"))
print(f"Job <{job_id}> is submitted to queue <normal>.")
'''

_BJOBS = r'''
record("bjobs", sys.argv[1:])
args = sys.argv[1:]
name = args[args.index("-J") + 1] if "-J" in args else None
ids = [a for a in args if a.isdigit()]
if name:
    ids = [p.stem for p in STATE.glob("*.job") if job(p.stem)[0] == name]
records = []
for i in ids:
    j = job(i)
    if j is None:
        records.append({"JOBID": i, "ERROR": f"Job <{i}> is not found"})
        continue
    jname, rc = j
    stat = "RUN" if rc is None else "DONE" if rc == 0 else "EXIT"
    records.append({"JOBID": i, "STAT": stat, "EXIT_CODE": "" if not rc else str(rc),
                    "EXIT_REASON": "", "PEND_REASON": "", "JOB_NAME": jname})
print(json.dumps({"COMMAND": "bjobs", "JOBS": len(records), "RECORDS": records}, indent=2))
sys.exit(255 if any("ERROR" in r for r in records) else 0)
'''

_FLUX = r'''
record("flux", sys.argv[1:])
sub, args = sys.argv[1], sys.argv[2:]
if sub == "batch":
    name = next(a.split("=", 1)[1] for a in args if a.startswith("--job-name="))
    script = Path(args[-1])
    text = script.read_text()
    job_id = "ƒ" + new_id() + "Ab"
    run_job(job_id, name, script, directive(text, r"^#flux: --output=(\S+)"),
            directive(text, r"^#flux: --error=(\S+)"))
    print(job_id)
elif sub == "jobs":
    name = next((a.split("=", 1)[1] for a in args if a.startswith("--name=")), None)
    ids = [a for a in args if a.startswith(("ƒ", "f")) and not a.startswith("{")]
    if name:
        ids = [p.stem for p in STATE.glob("*.job") if job(p.stem)[0] == name]
    for i in ids:
        j = job(i)
        if j is None:
            print(f"flux-jobs: ERROR: {i}: unknown job id", file=sys.stderr)
            continue
        jname, rc = j
        if rc is None:
            print(f"{i}|RUN|||||16|{jname}")
        else:
            result = "COMPLETED" if rc == 0 else "FAILED"
            print(f"{i}|INACTIVE|{result}|{rc}|{'exec' if rc else ''}|"
                  f"{'task 0: exited with exit code %d' % rc if rc else ''}|16|{jname}")
else:
    print(f"flux-cancel: ERROR: job is inactive", file=sys.stderr)
    sys.exit(1)
'''

_CONDOR_SUBMIT = r'''
record("condor_submit", sys.argv[1:], Path(sys.argv[-1]).read_text())
text = Path(sys.argv[-1]).read_text()
cmd = dict(line.split(" = ", 1) for line in text.splitlines() if " = " in line)
job_id = new_id() + ".0"
run_job(job_id, cmd["batch_name"], cmd["executable"], cmd.get("output"), cmd.get("error"))
print(f"{job_id} - {job_id}")
'''

_CONDOR_Q = r'''
record(TOOL, sys.argv[1:])
args = sys.argv[1:]
ids = [a for a in args if re.fullmatch(r"\d+\.\d+", a)]
if "-constraint" in args:
    name = re.search(r'"(.*)"', args[args.index("-constraint") + 1]).group(1)
    ids = [p.stem for p in STATE.glob("*.job") if job(p.stem)[0] == name]
for i in ids:
    j = job(i)
    if j is None:
        continue
    jname, rc = j
    finished = rc is not None
    if finished != (TOOL == "condor_history"):
        continue  # a finished job has left the queue; history has only finished ones
    status = 4 if finished else 2
    print("\t".join([i, str(status), str(rc) if finished else "undefined", "false",
                     "undefined", jname, "undefined"]))
'''

SCRIPTS = {
    "lsf": {"bsub": _BSUB, "bjobs": _BJOBS,
            "bkill": 'print("Job has already finished", file=sys.stderr); sys.exit(255)'},
    "flux": {"flux": _FLUX},
    "htcondor": {"condor_submit": _CONDOR_SUBMIT,
                 "condor_q": 'TOOL = "condor_q"\n' + _CONDOR_Q,
                 "condor_history": 'TOOL = "condor_history"\n' + _CONDOR_Q,
                 "condor_rm": 'print("Job not found", file=sys.stderr); sys.exit(1)'},
    "pbspro": standin_pbs.SCRIPTS,
}


def install(scheduler: str, root: Path) -> dict[str, str]:
    """Write the stand-ins of `scheduler` under `root`; the environment variables to use."""
    bin_dir, state = root / "bin", root / "state"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, body in SCRIPTS[scheduler].items():
        path = bin_dir / name
        path.write_text(f"#!{sys.executable}\n# A stand-in for {name}: {scheduler} cannot run "
                        f"here.\n{_COMMON}\n{body}\n")
        path.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "FNRELAY_STANDIN_DIR": str(state)}


def calls(env: dict[str, str]) -> list[dict]:
    """Every stand-in call recorded: {"tool", "argv", "stdin"}."""
    path = Path(env["FNRELAY_STANDIN_DIR"]) / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
