"""the format of a task and of a function: tasks.format, tasks.result_serializers,
functions.format (Globus Compute's routes record theirs)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 20:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('format', sa.String(length=16), nullable=False,
                                      server_default='fnrelay'))
        batch_op.add_column(sa.Column('result_serializers', sa.JSON(), nullable=True))
    with op.batch_alter_table('functions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('format', sa.String(length=16), nullable=False,
                                      server_default='fnrelay'))


def downgrade() -> None:
    with op.batch_alter_table('functions', schema=None) as batch_op:
        batch_op.drop_column('format')
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_column('result_serializers')
        batch_op.drop_column('format')
