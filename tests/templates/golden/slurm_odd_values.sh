#!/bin/bash
#SBATCH --job-name=fnrelay-0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20
#SBATCH --nodes=1
#SBATCH --ntasks=2
#SBATCH --ntasks-per-node=2
#SBATCH --time=61
#SBATCH --partition=debug-x_1.2
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
export FNRELAY_MPI_PREFIX='srun -N 1 -n 2 --ntasks-per-node=2 --mpi=pmix '"'"'--export=ALL,X=a b'"'"' podman run --rm --network=host --ipc=host --userns=keep-id --user=1000:1000 -v /in+1:/in+1 -v /scratch/fnrelay/tasks/0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20:/scratch/fnrelay/tasks/0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20 -w /scratch/fnrelay/tasks/0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20 -e FNRELAY_TASK_SANDBOX -e FNRELAY_NUM_RANKS -e FNRELAY_NUM_NODES -e CUDA_VISIBLE_DEVICES -e ROCR_VISIBLE_DEVICES -e ZE_AFFINITY_MASK -e '"'"'PMI_*'"'"' -e '"'"'PMIX_*'"'"' -e '"'"'SLURM_*'"'"' -e '"'"'OMPI_*'"'"' -e '"'"'PALS_*'"'"' -e '"'"'OMP_*'"'"' ghcr.io/org/img:1.0@sha256:0123abcd conda run --no-capture-output -p /opt/envs/py3.11+cuda'
export PARSL_MPI_PREFIX='srun -N 1 -n 2 --ntasks-per-node=2 --mpi=pmix '"'"'--export=ALL,X=a b'"'"' podman run --rm --network=host --ipc=host --userns=keep-id --user=1000:1000 -v /in+1:/in+1 -v /scratch/fnrelay/tasks/0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20:/scratch/fnrelay/tasks/0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20 -w /scratch/fnrelay/tasks/0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20 -e FNRELAY_TASK_SANDBOX -e FNRELAY_NUM_RANKS -e FNRELAY_NUM_NODES -e CUDA_VISIBLE_DEVICES -e ROCR_VISIBLE_DEVICES -e ZE_AFFINITY_MASK -e '"'"'PMI_*'"'"' -e '"'"'PMIX_*'"'"' -e '"'"'SLURM_*'"'"' -e '"'"'OMPI_*'"'"' -e '"'"'PALS_*'"'"' -e '"'"'OMP_*'"'"' ghcr.io/org/img:1.0@sha256:0123abcd conda run --no-capture-output -p /opt/envs/py3.11+cuda'
export FNRELAY_NUM_RANKS=2
export FNRELAY_NUM_NODES=1
export FNRELAY_TASK_SANDBOX=/scratch/fnrelay/tasks/0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20
set +e
srun -N 1 -n 2 --ntasks-per-node=2 --mpi=pmix '--export=ALL,X=a b' podman run --rm --network=host --ipc=host --userns=keep-id --user=1000:1000 -v /in+1:/in+1 -v /scratch/fnrelay/tasks/0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20:/scratch/fnrelay/tasks/0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20 -w /scratch/fnrelay/tasks/0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20 -e FNRELAY_TASK_SANDBOX -e FNRELAY_NUM_RANKS -e FNRELAY_NUM_NODES -e CUDA_VISIBLE_DEVICES -e ROCR_VISIBLE_DEVICES -e ZE_AFFINITY_MASK -e 'PMI_*' -e 'PMIX_*' -e 'SLURM_*' -e 'OMPI_*' -e 'PALS_*' -e 'OMP_*' ghcr.io/org/img:1.0@sha256:0123abcd conda run --no-capture-output -p /opt/envs/py3.11+cuda echo 'it'"'"'s $(not) run' '`id`'
exit $?
