"""The endpoint agent: one endpoint's tasks from its queue to its engine and back.

`agent` runs the endpoint (recover, register, reconnect, take messages, heartbeats) on its
I/O thread; `session` holds one AMQP connection's channels and senders; `outbox` takes what
engines report to the journal and the broker. `journal` keeps every task and result on disk,
`acker` acks tasks once journaled, `publisher` sends results, `retries` re-runs tasks lost to
infrastructure and `blobs` uploads results too large for a message. The threading and
durability rules are in `agent`'s docstring.
"""
