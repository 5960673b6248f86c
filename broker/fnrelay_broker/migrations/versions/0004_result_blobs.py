"""result blobs: result_blobs and result_blob_chunks

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 19:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'result_blobs',
        sa.Column('task_id', sa.String(length=36), nullable=False),
        sa.Column('size', sa.BigInteger(), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('store', sa.String(length=8), nullable=False),
        sa.Column('created', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('task_id'),
    )
    op.create_table(
        'result_blob_chunks',
        sa.Column('task_id', sa.String(length=36), nullable=False),
        sa.Column('seq', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('data', sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint('task_id', 'seq'),
    )


def downgrade() -> None:
    op.drop_table('result_blob_chunks')
    op.drop_table('result_blobs')
