"""continual adapters: the adapter one grew from, and each cycle's starts

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 16:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("adapter_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("grown_from_id", sa.String(length=32), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_adapter_versions_grown_from_id_adapter_versions"),
            "adapter_versions",
            ["grown_from_id"],
            ["id"],
        )

    # Server default fills the cycles that exist already: every one of them started from base.
    with op.batch_alter_table("training_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("starts", sa.JSON(), nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("training_runs", schema=None) as batch_op:
        batch_op.drop_column("starts")

    with op.batch_alter_table("adapter_versions", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_adapter_versions_grown_from_id_adapter_versions"), type_="foreignkey"
        )
        batch_op.drop_column("grown_from_id")
