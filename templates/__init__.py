"""Batch-script templates and multi-user config templates (package data of the endpoint)."""
