#!/bin/bash
#PBS -N fnrelay-0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20
#PBS -S /bin/bash
#PBS -l select=2:ncpus=32:mpiprocs=4:ompthreads=8:system=polaris:ngpus=4
#PBS -l place=scatter
#PBS -l walltime=00:30:00
#PBS -l filesystems=home:eagle
#PBS -l matlab=2
#PBS -q R123456
#PBS -A MyProject
#PBS -m n
#PBS -r n
#PBS -o /scratch/fnrelay/tasks/0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20/stdout
#PBS -e /scratch/fnrelay/tasks/0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20/stderr
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
export FNRELAY_MPI_PREFIX='mpiexec -n 8 --ppn 4 --hostfile "$PBS_NODEFILE" --depth=8 --cpu-bind depth sh -c '"'"'n=$1 per=$2 order=$3 var=$4; shift 4; r=${PALS_LOCAL_RANKID:-${PMI_LOCAL_RANK:-${OMPI_COMM_WORLD_LOCAL_RANK:-${MPI_LOCALRANKID:-${SLURM_LOCALID:-0}}}}}; d=; i=0; while [ "$i" -lt "$per" ]; do g=$(( (r * per + i) % n )); if [ "$order" = reverse ]; then g=$(( n - 1 - g )); fi; d=${d:+$d,}$g; i=$(( i + 1 )); done; export "$var=$d"; exec "$@"'"'"' fnrelay-gpu-affinity 4 1 reverse CUDA_VISIBLE_DEVICES'
export PARSL_MPI_PREFIX='mpiexec -n 8 --ppn 4 --hostfile "$PBS_NODEFILE" --depth=8 --cpu-bind depth sh -c '"'"'n=$1 per=$2 order=$3 var=$4; shift 4; r=${PALS_LOCAL_RANKID:-${PMI_LOCAL_RANK:-${OMPI_COMM_WORLD_LOCAL_RANK:-${MPI_LOCALRANKID:-${SLURM_LOCALID:-0}}}}}; d=; i=0; while [ "$i" -lt "$per" ]; do g=$(( (r * per + i) % n )); if [ "$order" = reverse ]; then g=$(( n - 1 - g )); fi; d=${d:+$d,}$g; i=$(( i + 1 )); done; export "$var=$d"; exec "$@"'"'"' fnrelay-gpu-affinity 4 1 reverse CUDA_VISIBLE_DEVICES'
export FNRELAY_NUM_RANKS=8
export FNRELAY_NUM_NODES=2
export FNRELAY_TASK_SANDBOX=/scratch/fnrelay/tasks/0b9f6c1e-3d5a-4c1e-9a43-2f7d8e6b1a20
export OMP_NUM_THREADS=8
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
fnrelay_setup 'module load conda'
fnrelay_setup 'eval "$(conda shell.bash hook)"'
fnrelay_setup 'conda activate base'
set +e
mpiexec -n 8 --ppn 4 --hostfile "$PBS_NODEFILE" --depth=8 --cpu-bind depth sh -c 'n=$1 per=$2 order=$3 var=$4; shift 4; r=${PALS_LOCAL_RANKID:-${PMI_LOCAL_RANK:-${OMPI_COMM_WORLD_LOCAL_RANK:-${MPI_LOCALRANKID:-${SLURM_LOCALID:-0}}}}}; d=; i=0; while [ "$i" -lt "$per" ]; do g=$(( (r * per + i) % n )); if [ "$order" = reverse ]; then g=$(( n - 1 - g )); fi; d=${d:+$d,}$g; i=$(( i + 1 )); done; export "$var=$d"; exec "$@"' fnrelay-gpu-affinity 4 1 reverse CUDA_VISIBLE_DEVICES ./simulate
exit $?
