#!/bin/bash
#SBATCH --job-name=fnrelay-0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20
#SBATCH --nodes=2
#SBATCH --ntasks=8
#SBATCH --ntasks-per-node=4
#SBATCH --cpus-per-task=2
#SBATCH --gpus-per-node=1
#SBATCH --mem=8G
#SBATCH --time=2
#SBATCH --partition=gpu
#SBATCH --account=proj.42
#SBATCH --qos=high
#SBATCH --constraint=a100&ib
#SBATCH --no-requeue
#SBATCH --exclusive
#SBATCH --output=/scratch/fnrelay/tasks/0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20/stdout
#SBATCH --error=/scratch/fnrelay/tasks/0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20/stderr
#SBATCH --mail-type=NONE
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
export FNRELAY_MPI_PREFIX='srun -N 2 -n 8 --ntasks-per-node=4 --cpus-per-task=2 --gpus-per-node=1 apptainer exec --bind /data:/data:ro --bind /scratch/fnrelay/tasks/0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20:/scratch/fnrelay/tasks/0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20 --pwd /scratch/fnrelay/tasks/0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20 --nv /images/sim.sif conda run --no-capture-output -n sim'
export PARSL_MPI_PREFIX='srun -N 2 -n 8 --ntasks-per-node=4 --cpus-per-task=2 --gpus-per-node=1 apptainer exec --bind /data:/data:ro --bind /scratch/fnrelay/tasks/0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20:/scratch/fnrelay/tasks/0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20 --pwd /scratch/fnrelay/tasks/0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20 --nv /images/sim.sif conda run --no-capture-output -n sim'
export FNRELAY_NUM_RANKS=8
export FNRELAY_NUM_NODES=2
export FNRELAY_TASK_SANDBOX=/scratch/fnrelay/tasks/0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20
export OMP_NUM_THREADS=2
# Set-up runs as a login session runs it: without -e and -u, which kill bashrc files that test
# $PS1 and conda's activate.d scripts. Each entry runs in this shell (eval), and one that fails
# stops the job before the command, naming itself.
set +eu
fnrelay_setup() {
    eval "$1" || {
        fnrelay_rc=$?
        printf 'fnrelay: job set-up failed (exit %s): %s\n' "$fnrelay_rc" "$1" >&2
        exit "$fnrelay_rc"
    }
}
fnrelay_setup 'module load gcc/12.2'
fnrelay_setup 'module load openmpi/4.1'
fnrelay_setup 'echo "starting in $FNRELAY_TASK_SANDBOX"'
set +e
srun -N 2 -n 8 --ntasks-per-node=4 --cpus-per-task=2 --gpus-per-node=1 apptainer exec --bind /data:/data:ro --bind /scratch/fnrelay/tasks/0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20:/scratch/fnrelay/tasks/0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20 --pwd /scratch/fnrelay/tasks/0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20 --nv /images/sim.sif conda run --no-capture-output -n sim ./simulate --steps 10
exit $?
