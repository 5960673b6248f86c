"""The endpoint agent: one endpoint's tasks from its queue to its engine and back.

`agent` runs the endpoint (recover, register, reconnect, heartbeats); `journal` keeps every
task and result on disk, `acker` acks tasks once journaled, `publisher` sends results,
`retries` re-runs tasks lost to infrastructure and `blobs` uploads results too large for a
message. The threading and durability rules are in `agent`'s docstring.
"""
