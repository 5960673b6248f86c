"""dashboard_sessions: server-side dashboard logins, their ids stored as digests

A cookie signed with a key kept in the database could be made by anyone who reads the
database; a random session id whose digest alone is stored cannot, and logout can end it.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 04:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'dashboard_sessions',
        sa.Column('id_digest', sa.String(length=64), nullable=False),
        sa.Column('token_digest', sa.String(length=64), nullable=False),
        sa.Column('expires', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('id_digest'),
    )
    with op.batch_alter_table('dashboard_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dashboard_sessions_expires'), ['expires'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('dashboard_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dashboard_sessions_expires'))
    op.drop_table('dashboard_sessions')
