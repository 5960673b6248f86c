"""direct_endpoint of task groups (a grant), broker_secrets, deleted_endpoints

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 09:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('task_groups') as batch:
        batch.add_column(sa.Column('direct_endpoint', sa.String(length=36), nullable=True))
        batch.create_index('ix_task_groups_direct_endpoint', ['direct_endpoint'])
    op.create_table(
        'broker_secrets',
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('value', sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )
    op.create_table(
        'deleted_endpoints',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('owner', sa.String(length=36), nullable=False),
        sa.Column('deleted', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )


def downgrade() -> None:
    op.drop_table('deleted_endpoints')
    op.drop_table('broker_secrets')
    with op.batch_alter_table('task_groups') as batch:
        batch.drop_index('ix_task_groups_direct_endpoint')
        batch.drop_column('direct_endpoint')
