"""Names and limits that cross a process boundary outside AMQP messages: environment
variables an engine or launcher sets for a task's command, files a job script leaves for the
endpoint, limits the broker and the endpoint both apply. Defined here once, so the writer and
the reader cannot drift apart.
"""

from __future__ import annotations

#: Largest retry limit a task may ask for: the broker refuses more at submit, the endpoint
#: caps what it gets (a direct-path task reaches it without the broker's check).
MAX_RETRIES_CAP = 100

# --- a task's environment (set by engines and the launch chain, read by MPIFunction) --------
#: The MPI launcher prefix for the task's ranks (set only where the engine knows the nodes).
ENV_MPI_PREFIX = "FNRELAY_MPI_PREFIX"
#: The same prefix under the name Globus Compute's MPIFunction reads (`$PARSL_MPI_PREFIX cmd`):
#: every engine exports both, equal, so commands written for Globus Compute run unchanged.
ENV_PARSL_MPI_PREFIX = "PARSL_MPI_PREFIX"
#: Globus Compute's name of the running task (its ShellFunction names output files after it).
ENV_GC_TASK_UUID = "GC_TASK_UUID"
#: How many ranks the task asked for (`resource_specification.num_ranks`).
ENV_NUM_RANKS = "FNRELAY_NUM_RANKS"
#: How many nodes the task's ranks span.
ENV_NUM_NODES = "FNRELAY_NUM_NODES"
#: The task's sandbox directory (batch engine).
ENV_TASK_SANDBOX = "FNRELAY_TASK_SANDBOX"

# --- a batch job's sandbox ------------------------------------------------------------------
#: File in a task's sandbox where the job script's EXIT trap writes the command's exit
#: status (via a `.tmp` and a rename); the endpoint reads it when the scheduler forgets a job.
EXIT_STATUS_FILE = "exit_status"
