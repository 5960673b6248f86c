#!/bin/bash
#SBATCH --job-name=fnrelay-0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --ntasks-per-node=1
#SBATCH --no-requeue
#SBATCH --output=/scratch/fnrelay/tasks/0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20/stdout
#SBATCH --error=/scratch/fnrelay/tasks/0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20/stderr
set -eu
fnrelay_sandbox=/scratch/fnrelay/tasks/0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20
# Record the exit status in the sandbox, so it is known after the job leaves the scheduler.
fnrelay_record_exit() {
    fnrelay_rc=$?
    printf '%s\n' "$fnrelay_rc" > "$fnrelay_sandbox/exit_status.tmp" &&
        mv -f "$fnrelay_sandbox/exit_status.tmp" "$fnrelay_sandbox/exit_status"
}
trap fnrelay_record_exit EXIT
trap 'exit 143' TERM
cd "$fnrelay_sandbox"
export FNRELAY_NUM_RANKS=1
export FNRELAY_NUM_NODES=1
export FNRELAY_TASK_SANDBOX=/scratch/fnrelay/tasks/0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20
set +e
python3 -m fnrelay_endpoint.worker task.json
exit $?
