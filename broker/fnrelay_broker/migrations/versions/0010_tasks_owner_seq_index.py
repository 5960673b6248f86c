"""tasks: ix_tasks_owner_seq (owner, seq) replaces ix_tasks_owner

GET /v1/tasks reads one user's tasks newest first, a page at a time: with the composite index
a page is a range scan, not a sort of all the user's tasks. It covers every query by owner
alone, so the single-column index would only cost a B-tree insert per task.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 00:00:00
"""

from __future__ import annotations

from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tasks') as batch:
        batch.create_index('ix_tasks_owner_seq', ['owner', 'seq'], unique=False)
        batch.drop_index('ix_tasks_owner')


def downgrade() -> None:
    with op.batch_alter_table('tasks') as batch:
        batch.create_index('ix_tasks_owner', ['owner'], unique=False)
        batch.drop_index('ix_tasks_owner_seq')
