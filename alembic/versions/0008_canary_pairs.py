"""canary_pairs: mirrored questions, Active's answer paired with the canary's

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 14:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('canary_pairs',
    sa.Column('canary_id', sa.String(length=32), nullable=False),
    sa.Column('answer_id', sa.String(length=32), nullable=False),
    sa.Column('domain', sa.String(length=64), nullable=False),
    sa.Column('canary_answer', sa.Text(), nullable=False),
    sa.Column('canary_latency_ms', sa.Float(), nullable=False),
    sa.Column('canary_finish_reason', sa.String(length=32), nullable=True),
    sa.Column('canary_error', sa.Text(), nullable=True),
    sa.Column('judge_active_first', sa.String(length=8), nullable=True),
    sa.Column('judge_canary_first', sa.String(length=8), nullable=True),
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['answer_id'], ['answers.id'], name=op.f('fk_canary_pairs_answer_id_answers')),
    sa.ForeignKeyConstraint(['canary_id'], ['canaries.id'], name=op.f('fk_canary_pairs_canary_id_canaries')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_canary_pairs'))
    )
    with op.batch_alter_table('canary_pairs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_canary_pairs_answer_id'), ['answer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_canary_pairs_canary_id'), ['canary_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_canary_pairs_created_at'), ['created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('canary_pairs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_canary_pairs_created_at'))
        batch_op.drop_index(batch_op.f('ix_canary_pairs_canary_id'))
        batch_op.drop_index(batch_op.f('ix_canary_pairs_answer_id'))

    op.drop_table('canary_pairs')
