"""How one task's command starts: MPI launcher ∘ container ∘ conda env ∘ command.

Each piece is a small module producing argv tokens (`mpi`, `container`, `conda`) or set-up
lines (`prelude`); `shell` quotes them and `chain` composes them. Where the nodes come from is
the scheduler template's business (``fnrelay_endpoint.engines.batch.templating``), not this
package's.
"""

from fnrelay_wrappers.chain import LaunchChain, build_chain
from fnrelay_wrappers.mpi import Layout

__all__ = ["LaunchChain", "Layout", "build_chain"]
