"""canaries: the canary table, arms on answers, failed requests per arm, decisions per canary

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 08:51:33.213483
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('canaries',
    sa.Column('snapshot_id', sa.String(length=32), nullable=False),
    sa.Column('baseline_snapshot_id', sa.String(length=32), nullable=False),
    sa.Column('cycle_id', sa.String(length=32), nullable=True),
    sa.Column('percent', sa.Float(), nullable=False),
    sa.Column('mirror_percent', sa.Float(), nullable=False),
    sa.Column('min_requests', sa.Integer(), nullable=False),
    sa.Column('max_duration_s', sa.Float(), nullable=False),
    sa.Column('salt', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('started_by', sa.String(length=255), nullable=False),
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['baseline_snapshot_id'], ['snapshots.id'], name=op.f('fk_canaries_baseline_snapshot_id_snapshots')),
    sa.ForeignKeyConstraint(['cycle_id'], ['training_runs.id'], name=op.f('fk_canaries_cycle_id_training_runs')),
    sa.ForeignKeyConstraint(['snapshot_id'], ['snapshots.id'], name=op.f('fk_canaries_snapshot_id_snapshots')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_canaries'))
    )
    with op.batch_alter_table('canaries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_canaries_snapshot_id'), ['snapshot_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_canaries_started_at'), ['started_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_canaries_status'), ['status'], unique=False)

    op.create_table('canary_arm_events',
    sa.Column('canary_id', sa.String(length=32), nullable=False),
    sa.Column('arm', sa.String(length=8), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('sticky', sa.Boolean(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['canary_id'], ['canaries.id'], name=op.f('fk_canary_arm_events_canary_id_canaries')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_canary_arm_events'))
    )
    with op.batch_alter_table('canary_arm_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_canary_arm_events_canary_id'), ['canary_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_canary_arm_events_created_at'), ['created_at'], unique=False)

    with op.batch_alter_table('answers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('role', sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column('canary_id', sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f('ix_answers_canary_id'), ['canary_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_answers_canary_id_canaries'), 'canaries', ['canary_id'], ['id'])

    # canary_decisions had no code writing it, so it has no rows: the new column can be NOT NULL.
    with op.batch_alter_table('canary_decisions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('canary_id', sa.String(length=32), nullable=False))
        batch_op.create_index(batch_op.f('ix_canary_decisions_canary_id'), ['canary_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_canary_decisions_canary_id_canaries'), 'canaries', ['canary_id'], ['id'])



def downgrade() -> None:
    with op.batch_alter_table('canary_decisions', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_canary_decisions_canary_id_canaries'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_canary_decisions_canary_id'))
        batch_op.drop_column('canary_id')

    with op.batch_alter_table('answers', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_answers_canary_id_canaries'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_answers_canary_id'))
        batch_op.drop_column('canary_id')
        batch_op.drop_column('role')

    with op.batch_alter_table('canary_arm_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_canary_arm_events_created_at'))
        batch_op.drop_index(batch_op.f('ix_canary_arm_events_canary_id'))

    op.drop_table('canary_arm_events')
    with op.batch_alter_table('canaries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_canaries_status'))
        batch_op.drop_index(batch_op.f('ix_canaries_started_at'))
        batch_op.drop_index(batch_op.f('ix_canaries_snapshot_id'))

    op.drop_table('canaries')
