"""An endpoint's configuration: `model` (its files and the typed settings of config.yaml),
`validators` (one check per kind of setting, used by the model and every engine) and
`scaffold` (a new endpoint's directory, from the endpoint.yaml and manager.yaml beside it)."""
