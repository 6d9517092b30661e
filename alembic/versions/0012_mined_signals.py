"""mined_signals and mining_runs: weak signals the miner finds in the answer log

Revision ID: 0012
Revises: 0010 (0011 is taken by another branch: point it at 0011 when both are merged)
Create Date: 2026-12-03 17:59:04.564390
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('mining_runs',
    sa.Column('trigger', sa.String(length=32), nullable=False),
    sa.Column('scanned_from', sa.DateTime(timezone=True), nullable=False),
    sa.Column('scanned_until', sa.DateTime(timezone=True), nullable=False),
    sa.Column('similarity', sa.String(length=16), nullable=False),
    sa.Column('counts', sa.JSON(), nullable=False),
    sa.Column('seconds', sa.Float(), nullable=False),
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mining_runs'))
    )
    with op.batch_alter_table('mining_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_mining_runs_created_at'), ['created_at'], unique=False)

    op.create_table('mined_signals',
    sa.Column('rule', sa.String(length=32), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('answer_id', sa.String(length=32), nullable=False),
    sa.Column('later_answer_id', sa.String(length=32), nullable=True),
    sa.Column('source', sa.String(length=384), nullable=False),
    sa.Column('domain', sa.String(length=64), nullable=False),
    sa.Column('question', sa.Text(), nullable=False),
    sa.Column('rejected_answer', sa.Text(), nullable=False),
    sa.Column('chosen_answer', sa.Text(), nullable=True),
    sa.Column('chosen_from', sa.String(length=16), nullable=True),
    sa.Column('similarity', sa.Float(), nullable=True),
    sa.Column('gap_s', sa.Float(), nullable=True),
    sa.Column('evidence', sa.JSON(), nullable=False),
    sa.Column('screen_rule', sa.String(length=32), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('example_id', sa.String(length=32), nullable=True),
    sa.Column('reviewed_by', sa.String(length=255), nullable=True),
    sa.Column('reviewed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['answer_id'], ['answers.id'], name=op.f('fk_mined_signals_answer_id_answers')),
    sa.ForeignKeyConstraint(['example_id'], ['training_examples.id'], name=op.f('fk_mined_signals_example_id_training_examples')),
    sa.ForeignKeyConstraint(['later_answer_id'], ['answers.id'], name=op.f('fk_mined_signals_later_answer_id_answers')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mined_signals')),
    sa.UniqueConstraint('answer_id', 'rule', name=op.f('uq_mined_signals_answer_id'))
    )
    with op.batch_alter_table('mined_signals', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_mined_signals_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_mined_signals_example_id'), ['example_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_mined_signals_rule'), ['rule'], unique=False)
        batch_op.create_index(batch_op.f('ix_mined_signals_source'), ['source'], unique=False)
        batch_op.create_index(batch_op.f('ix_mined_signals_state'), ['state'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('mined_signals', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_mined_signals_state'))
        batch_op.drop_index(batch_op.f('ix_mined_signals_source'))
        batch_op.drop_index(batch_op.f('ix_mined_signals_rule'))
        batch_op.drop_index(batch_op.f('ix_mined_signals_example_id'))
        batch_op.drop_index(batch_op.f('ix_mined_signals_created_at'))

    op.drop_table('mined_signals')
    with op.batch_alter_table('mining_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_mining_runs_created_at'))

    op.drop_table('mining_runs')
