"""The scheduler tests use the session-wide `slurm_cluster` fixture (tests/support)."""
