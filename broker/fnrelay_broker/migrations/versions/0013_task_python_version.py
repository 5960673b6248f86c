"""tasks.python_version: the submitter's Python "major.minor"

Kept with the task so the outbox forwards it to the endpoint, which picks an interpreter of
that version (or refuses bytecode it cannot read) from it.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 02:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('python_version', sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_column('python_version')
