"""task groups: handed_out, the time of the latest hand-out of the group's reader account

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 11:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('task_groups') as batch:
        batch.add_column(sa.Column('handed_out', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('task_groups') as batch:
        batch.drop_column('handed_out')
