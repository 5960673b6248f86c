"""Engine `batch`, one scheduler job per task: the engine, the job's entry point (`job`), the
task's sandbox directory, script rendering (`templating`), the `schedulers` and the packaged
job-script `templates/` (package data)."""
