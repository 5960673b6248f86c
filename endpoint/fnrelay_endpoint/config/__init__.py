"""An endpoint's configuration: its files and the typed settings model (`model`)."""
