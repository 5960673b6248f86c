"""tasks: drop ix_tasks_task_group_id, which ix_tasks_group_seq (task_group_id, seq) covers

Every query on a group's tasks uses the composite index's first column as well, so the
single-column one only cost a B-tree insert per recorded task.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 16:00:00
"""

from __future__ import annotations

from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tasks') as batch:
        batch.drop_index('ix_tasks_task_group_id')


def downgrade() -> None:
    with op.batch_alter_table('tasks') as batch:
        batch.create_index('ix_tasks_task_group_id', ['task_group_id'], unique=False)
