"""rag_versions: each domain's RAG versions, reserved by the ingest that writes them

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 16:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = sa.text("state IN ('reserved', 'failed')")


def upgrade() -> None:
    op.create_table('rag_versions',
    sa.Column('domain', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('actor', sa.String(length=255), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('domain', 'version', name=op.f('pk_rag_versions'))
    )
    with op.batch_alter_table('rag_versions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rag_versions_created_at'), ['created_at'], unique=False)
        batch_op.create_index('uq_rag_versions_open_domain', ['domain'], unique=True,
                              sqlite_where=OPEN, postgresql_where=OPEN)

    # Versions taken before this table existed: the newest of each domain, as staged (the
    # ingest that took it staged it), so the next version follows it.
    op.execute(
        "INSERT INTO rag_versions (domain, version, state, actor, updated_at, created_at) "
        "SELECT domain, MAX(version), 'staged', 'migration 0009', CURRENT_TIMESTAMP, "
        "CURRENT_TIMESTAMP FROM ("
        "SELECT domain, added_in_version AS version FROM documents "
        "UNION ALL SELECT domain, removed_in_version FROM documents "
        "WHERE removed_in_version IS NOT NULL) AS taken GROUP BY domain"
    )


def downgrade() -> None:
    with op.batch_alter_table('rag_versions', schema=None) as batch_op:
        batch_op.drop_index('uq_rag_versions_open_domain',
                            sqlite_where=OPEN, postgresql_where=OPEN)
        batch_op.drop_index(batch_op.f('ix_rag_versions_created_at'))

    op.drop_table('rag_versions')
