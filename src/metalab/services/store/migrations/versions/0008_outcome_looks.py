"""outcomes are appended; their looks are taken later, in id order (issue 33)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 01:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("experiment_outcomes", sa.Column("look", sa.Integer(), nullable=True))
    pending = sa.text("look IS NULL")
    op.create_index(
        "ix_experiment_outcomes_pending",
        "experiment_outcomes",
        ["experiment_id"],
        sqlite_where=pending,
        postgresql_where=pending,
    )
    # Every stored outcome was analysed when it was written: its look is its rank in its experiment.
    op.execute(
        "UPDATE experiment_outcomes SET look = (SELECT count(*) FROM experiment_outcomes AS earlier "
        "WHERE earlier.experiment_id = experiment_outcomes.experiment_id AND earlier.id <= experiment_outcomes.id)"
    )


def downgrade() -> None:
    op.drop_index("ix_experiment_outcomes_pending", table_name="experiment_outcomes")
    op.drop_column("experiment_outcomes", "look")
