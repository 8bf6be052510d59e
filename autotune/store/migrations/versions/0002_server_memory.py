"""A real server's own account of its memory per configuration: the KV budget later plans use.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

NAME = sa.String(255)


def upgrade() -> None:
    op.create_table(
        "autotune_server_memory",
        sa.Column("model", NAME, nullable=False),
        sa.Column("gpu", NAME, nullable=False),
        sa.Column("server_version", NAME, nullable=False),
        sa.Column("tp", sa.Integer(), nullable=False),
        sa.Column("mem_fraction_static", NAME, nullable=False),
        sa.Column("kvcache_gib", sa.Double(), nullable=False),
        sa.Column("weight_gib", sa.Double(), nullable=True),
        sa.Column("study_name", NAME, nullable=False),
        sa.Column("trial", sa.Integer(), nullable=False),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("model", "gpu", "server_version", "tp", "mem_fraction_static",
                                name="pk_autotune_server_memory"),
    )


def downgrade() -> None:
    op.drop_table("autotune_server_memory")
