"""canaries: one running at a time whichever gateway starts it; when each share applies

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RUNNING = sa.text("status = 'running'")


def upgrade() -> None:
    # Two gateways could each start a canary before the index existed; every gateway followed
    # the newest, so the others were running in name only: end them before the index is made.
    op.execute(
        "UPDATE canaries SET status = 'aborted', ended_at = CURRENT_TIMESTAMP, "
        "reason = 'ended by migration 0013: a newer canary was running at the same time' "
        "WHERE status = 'running' AND id NOT IN "
        "(SELECT id FROM canaries WHERE status = 'running' ORDER BY started_at DESC LIMIT 1)"
    )
    with op.batch_alter_table('canaries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('percent_from', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('previous_percent', sa.Float(), nullable=True))
    # A canary written before this split from its start, at its share.
    op.execute("UPDATE canaries SET percent_from = started_at")
    with op.batch_alter_table('canaries', schema=None) as batch_op:
        batch_op.alter_column('percent_from', existing_type=sa.DateTime(timezone=True),
                              nullable=False)
        batch_op.create_index('uq_canaries_running', ['status'], unique=True,
                              sqlite_where=RUNNING, postgresql_where=RUNNING)


def downgrade() -> None:
    with op.batch_alter_table('canaries', schema=None) as batch_op:
        batch_op.drop_index('uq_canaries_running', sqlite_where=RUNNING,
                            postgresql_where=RUNNING)
        batch_op.drop_column('previous_percent')
        batch_op.drop_column('percent_from')
