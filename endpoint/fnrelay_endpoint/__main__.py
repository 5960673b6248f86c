"""`python -m fnrelay_endpoint`: the CLI, as the endpoint starts itself in the background.

Run as `-m fnrelay_endpoint.cli`, every local worker (multiprocessing re-runs the main module
by name in each) re-executed the CLI that the forkserver had preloaded, and runpy put a
RuntimeWarning into endpoint.log each time; multiprocessing leaves a `__main__` module alone.
"""

from fnrelay_endpoint.cli import main

if __name__ == "__main__":  # imported (as the import contract test does), it runs nothing
    main()
