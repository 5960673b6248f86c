"""Alembic revisions, one module each (a package so that wheels ship them)."""
