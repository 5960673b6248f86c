"""tasks: ix_tasks_owner_open, a partial index of each user's unfinished tasks

The per-user quota of queued tasks counts a user's unfinished tasks at every submit; finished
tasks are kept for days (result_ttl), so an index of unfinished ones only keeps the count
small.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 02:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

# As models.OPEN_TASK when this migration was written (a migration does not follow later
# changes of the models).
OPEN_TASK = "status NOT IN ('success', 'failed', 'cancelled')"


def upgrade() -> None:
    op.create_index('ix_tasks_owner_open', 'tasks', ['owner'], unique=False,
                    sqlite_where=sa.text(OPEN_TASK), postgresql_where=sa.text(OPEN_TASK))


def downgrade() -> None:
    op.drop_index('ix_tasks_owner_open', table_name='tasks')
