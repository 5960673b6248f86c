"""Engine `parsl`, many tasks per scheduler job on Parsl: the engine, its `settings` (the
config's Parsl options, validated) and the `worker` function Parsl's workers run."""
