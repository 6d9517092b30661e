"""weak spots fed forward: rejections per example, targets per cycle

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 13:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Server defaults fill the rows that exist already.
    with op.batch_alter_table('training_examples', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rejections', sa.Integer(), nullable=False, server_default='0'))

    with op.batch_alter_table('training_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('targets', sa.JSON(), nullable=False, server_default='{}'))


def downgrade() -> None:
    with op.batch_alter_table('training_runs', schema=None) as batch_op:
        batch_op.drop_column('targets')

    with op.batch_alter_table('training_examples', schema=None) as batch_op:
        batch_op.drop_column('rejections')
