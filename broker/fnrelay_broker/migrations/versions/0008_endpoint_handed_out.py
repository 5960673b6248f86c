"""endpoints: handed_out, the time a manager last got a child's credentials

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 19:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('endpoints') as batch:
        batch.add_column(sa.Column('handed_out', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('endpoints') as batch:
        batch.drop_column('handed_out')
