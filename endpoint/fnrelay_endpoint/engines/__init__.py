"""Engines run tasks: `base` (the Engine contract and the registry of engine types) and
`resources` (the per-task resource specification) serve them all; each engine is a subpackage
(`local`, `batch`, `parsl`) whose `engine` module defines it as ``ENGINE``."""
