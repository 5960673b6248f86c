"""The all-in-one local stack: RabbitMQ, a broker, a user and one endpoint on this machine.

A developer's and the tests' tool, outside the SDK's import path: `fnrelay local` loads it,
no daemon imports it (tests/test_import_contract.py holds them to that). One module a concept:

- `extras`: what the stack needs installed beyond the SDK;
- `processes`: spawning, stopping and finding the stack's processes by their marker, ports;
- `rabbitmq`: a private RabbitMQ node and the rules for its directory;
- `services`: the broker and an endpoint as processes;
- `stack`: the whole stack, its state file and the `export` lines it prints;
- `cli`: `fnrelay local up|down|status`.

On a shared machine the stack is its owner's alone: RabbitMQ has no guest account, passwords
reach processes by their environment (readable by their owner only), never their command line
(readable by all), and directories are 0700 and files 0600.
"""
