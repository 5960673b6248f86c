"""Stand-ins for PBS Professional's qsub, qstat, qdel and qselect, which cannot run here.

Installed by `standin_schedulers.install("pbspro", root)`. Unlike the other stand-ins, jobs run
in the background (a detached runner, one bash per job or subjob), so that a job can be seen
queued or running and be deleted while it runs. What the stand-in checks and answers follows the
PBS Professional 2022.1 Reference Guide (qsub, qstat, qdel) and User's Guide ("Job Arrays"):

- `qsub -J X-Y[:Z][%N]` with X < Y makes an array `<seq>[].<server>`; its subjobs are
  `<seq>[i].<server>` and see PBS_ARRAY_INDEX, PBS_ARRAY_ID and PBS_JOBID. An array that is not
  rerunnable (`-r n` on the command line, else `#PBS -r n` in the script) is refused with
  "qsub: cannot submit non-rerunable Array Job". Command-line options override directives;
  `^array_index^` in -o/-e becomes the subjob's index; `-j oe` joins stderr to stdout.
- `qstat -f -x [-t] -F json ids`: a plain job is Q, R, then F with Exit_status; an array is Q,
  B once a subjob began, F when all ended; a subjob is Q, R, then X. Subjobs of an array id
  are listed only with -t. An unknown id: "qstat: Unknown Job Id <id>", exit 153.
- `qdel id`: a subjob or a whole array (`<seq>[]`); a running job gets SIGTERM (Exit_status
  256+15), a queued one ends X/F without Exit_status and substate 91; a finished one:
  "qdel: Job has finished <id>", exit 35.
- `qselect -x -N name -u user`: ids of jobs of that name.
It does not schedule, queue behind limits or enforce resources.
"""

from __future__ import annotations

_PBS_COMMON = r'''
import signal, time
SERVER = "pbs01"
PBS = STATE / "pbs"
PBS.mkdir(exist_ok=True)
ID = re.compile(r"^(\d+)(\[(\d*)\])?(\.\S+)?$")

def load(seq):
    path = PBS / f"{seq}.json"
    return json.loads(path.read_text()) if path.exists() else None

def elements(seq, spec):
    return [str(i) for i in spec["indices"]] if spec["array"] else ["-"]

def part(seq, index, what):
    return PBS / f"{seq}.{index}.{what}"

def element_state(seq, index):
    """(state letter, Exit_status or None, substate) of one job or subjob."""
    rc = part(seq, index, "rc")
    if rc.exists():
        code = rc.read_text().strip()
        deleted = part(seq, index, "deleted").exists()
        if code == "":
            return "X", None, 91
        return "X", int(code), 91 if deleted else 92
    if part(seq, index, "pid").exists():
        return "R", None, 42
    return "Q", None, 10

def parse_id(text):
    m = ID.match(text)
    if not m:
        return None
    return m.group(1), m.group(2) is not None, m.group(3)
'''

_QSUB = r'''
record("qsub", sys.argv[1:])
VALUED = {"-N", "-J", "-r", "-o", "-e", "-j", "-q", "-A", "-l", "-S", "-m", "-W", "-v"}
args, opts = sys.argv[1:], {}
i = 0
while i < len(args) - 1:
    if args[i] not in VALUED:
        print(f"qsub: invalid option -- '{args[i]}'", file=sys.stderr)
        sys.exit(2)
    opts[args[i]] = args[i + 1]
    i += 2
if i != len(args) - 1:
    print("usage: qsub [-J X-Y[:Z][%N]] ... script", file=sys.stderr)
    sys.exit(2)
script = Path(args[-1]).resolve()
text = script.read_text()
for key in ("-N", "-r", "-o", "-e", "-j"):
    if key not in opts:
        value = directive(text, rf"^#PBS {key} (\S+)")
        if value is not None:
            opts[key] = value
indices = None
if "-J" in opts:
    m = re.fullmatch(r"(\d+)-(\d+)(?::(\d+))?(?:%(\d+))?", opts["-J"])
    if not m or int(m.group(1)) >= int(m.group(2)):
        print("qsub: illegal -J value", file=sys.stderr)
        sys.exit(2)
    indices = list(range(int(m.group(1)), int(m.group(2)) + 1, int(m.group(3) or 1)))
    if opts.get("-r", "y") == "n":
        print("qsub: cannot submit non-rerunable Array Job", file=sys.stderr)
        sys.exit(1)
if opts.get("-j", "n") not in ("oe", "eo", "n"):
    print("qsub: illegal -j value", file=sys.stderr)
    sys.exit(2)
seq = len(list(PBS.glob("*.json"))) + 1001
job_id = f"{seq}[].{SERVER}" if indices is not None else f"{seq}.{SERVER}"
spec = {"id": job_id, "name": opts.get("-N", script.name), "array": indices is not None,
        "indices": indices or [], "script": str(script), "cwd": os.getcwd(),
        "out": opts.get("-o"), "err": opts.get("-e"), "join": opts.get("-j", "n")}
(PBS / f"{seq}.json").write_text(json.dumps(spec))
subprocess.Popen([sys.executable, str(Path(sys.argv[0]).parent / "pbs-standin-runner"),
                  str(seq)], start_new_session=True, stdin=subprocess.DEVNULL,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(job_id)
'''

_RUNNER = r'''
seq = sys.argv[1]
spec = load(seq)
children = {}

def start(index):
    sub_id = spec["id"].replace("[]", f"[{index}]") if spec["array"] else spec["id"]
    env = {**os.environ, "PBS_JOBID": sub_id, "PBS_JOBNAME": spec["name"],
           "PBS_O_WORKDIR": spec["cwd"]}
    if spec["array"]:
        env.update(PBS_ARRAY_INDEX=index, PBS_ARRAY_ID=spec["id"])
    def path(p):
        return p.replace("^array_index^", index) if p else os.devnull
    out = open(path(spec["out"]), "ab")
    err = out if spec["join"] == "oe" else open(path(spec["err"]), "ab")
    proc = subprocess.Popen(["bash", spec["script"]], env=env, stdout=out, stderr=err,
                            stdin=subprocess.DEVNULL, cwd=os.path.expanduser("~"),
                            start_new_session=True)
    part(seq, index, "pid").write_text(str(proc.pid))
    if part(seq, index, "deleted").exists():  # qdel raced the start
        os.killpg(proc.pid, signal.SIGTERM)
    children[index] = proc

for index in elements(seq, spec):
    if part(seq, index, "deleted").exists():
        part(seq, index, "rc").write_text("")
    else:
        start(index)
by_pid = {proc.pid: index for index, proc in children.items()}
while by_pid:  # record each subjob's end as it comes, whatever the order
    pid, status = os.wait()
    if pid in by_pid:
        rc = os.waitstatus_to_exitcode(status)
        code = 256 + (-rc) if rc < 0 else rc  # PBS: 256+N for a job killed by signal N
        part(seq, by_pid.pop(pid), "rc").write_text(str(code))
'''

_QSTAT = r'''
record("qstat", sys.argv[1:])
args = sys.argv[1:]
if not {"-f", "-F", "json"} <= set(args) or "-x" not in args:
    print(f"stand-in qstat answers `qstat -f -x [-t] -F json ids` only: {args}",
          file=sys.stderr)
    sys.exit(2)
expand = "-t" in args
ids = [a for a in args if a not in ("-f", "-x", "-t", "-F", "json")]
jobs, rc = {}, 0

def attrs(spec, seq, index):
    state, code, substate = element_state(seq, index)
    a = {"Job_Name": spec["name"], "Job_Owner": "fnrelay@login1", "queue": "workq",
         "substate": substate}
    if spec["array"]:
        a.update(array_id=spec["id"], array_index=int(index), job_state=state)
    else:
        a["job_state"] = "F" if state == "X" else state
    if code is not None:
        a["Exit_status"] = code
    return a

for text in ids:
    parsed = parse_id(text)
    spec = load(parsed[0]) if parsed else None
    spec_seq = parsed[0] if parsed else None
    if spec is None or parsed[1] != spec["array"] or (
            parsed[2] and int(parsed[2]) not in spec["indices"]):
        print(f"qstat: Unknown Job Id {text}", file=sys.stderr)
        rc = 153
        continue
    if not spec["array"]:
        jobs[spec["id"]] = attrs(spec, spec_seq, "-")
        continue
    if parsed[2]:
        jobs[spec["id"].replace("[]", f"[{parsed[2]}]")] = attrs(spec, spec_seq, parsed[2])
        continue
    states = [element_state(spec_seq, str(i))[0] for i in spec["indices"]]
    count = {s: states.count(s) for s in "QRX"}
    whole = "F" if count["X"] == len(states) else "Q" if count["Q"] == len(states) else "B"
    jobs[spec["id"]] = {"Job_Name": spec["name"], "job_state": whole, "array": "True",
                        "array_indices_submitted": f"{spec['indices'][0]}-"
                                                   f"{spec['indices'][-1]}",
                        "array_state_count": f"Queued:{count['Q']} Running:{count['R']} "
                                             f"Exiting:0 Expired:{count['X']} "}
    if expand:
        for i in spec["indices"]:
            jobs[spec["id"].replace("[]", f"[{i}]")] = attrs(spec, spec_seq, str(i))
if jobs:
    print(json.dumps({"timestamp": int(time.time()), "pbs_version": "2022.1.1",
                      "pbs_server": SERVER, "Jobs": jobs}, indent=4))
sys.exit(rc)
'''

_QDEL = r'''
record("qdel", sys.argv[1:])
rc = 0
for text in sys.argv[1:]:
    parsed = parse_id(text)
    spec = load(parsed[0]) if parsed else None
    if spec is None or parsed[1] != spec["array"]:
        print(f"qdel: Unknown Job Id {text}", file=sys.stderr)
        rc = 153
        continue
    targets = [parsed[2]] if parsed[2] else elements(parsed[0], spec)
    if all(part(parsed[0], i, "rc").exists() for i in targets):
        print(f"qdel: Job has finished {text}", file=sys.stderr)
        rc = 35
        continue
    for index in targets:
        if part(parsed[0], index, "rc").exists():
            continue
        part(parsed[0], index, "deleted").write_text("")
        pid = part(parsed[0], index, "pid")
        if pid.exists():
            try:
                os.killpg(int(pid.read_text()), signal.SIGTERM)
            except ProcessLookupError:
                pass
sys.exit(rc)
'''

_QSELECT = r'''
record("qselect", sys.argv[1:])
args = sys.argv[1:]
name = args[args.index("-N") + 1] if "-N" in args else None
for path in sorted(PBS.glob("*.json")):
    spec = json.loads(path.read_text())
    if name is None or spec["name"] == name:
        print(spec["id"])
'''

SCRIPTS = {name: _PBS_COMMON + body for name, body in (
    ("qsub", _QSUB), ("qstat", _QSTAT), ("qdel", _QDEL), ("qselect", _QSELECT),
    ("pbs-standin-runner", _RUNNER))}
