#!/bin/bash -l
#SBATCH --job-name=fnrelay-0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20
#SBATCH --nodes=2
#SBATCH --ntasks=16
#SBATCH --ntasks-per-node=8
#SBATCH --cpus-per-task=7
#SBATCH --gpus-per-node=8
#SBATCH --gres=nvme:1
#SBATCH --reservation=maint
#SBATCH --licenses=lustre@db:2
#SBATCH --clusters=frontier
#SBATCH --signal=B:USR1@120
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
export FNRELAY_MPI_PREFIX='srun -N 2 -n 16 --ntasks-per-node=8 --cpus-per-task=7 --gpus-per-task=1 --gpu-bind=closest --mpi=pmix'
export PARSL_MPI_PREFIX='srun -N 2 -n 16 --ntasks-per-node=8 --cpus-per-task=7 --gpus-per-task=1 --gpu-bind=closest --mpi=pmix'
export FNRELAY_NUM_RANKS=16
export FNRELAY_NUM_NODES=2
export FNRELAY_TASK_SANDBOX=/scratch/fnrelay/tasks/0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20
export OMP_NUM_THREADS=7
set +e
srun -N 2 -n 16 --ntasks-per-node=8 --cpus-per-task=7 --gpus-per-task=1 --gpu-bind=closest --mpi=pmix ./simulate
exit $?
