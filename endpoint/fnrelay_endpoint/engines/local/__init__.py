"""Engine `local`, a warm pool of worker processes on this machine: the engine, the
`containment` of a task's processes and memory, and its capped `task_output` files."""
