"""The first schema: models, GPUs, workloads, optima, rules, exports.

Written out by hand rather than from `schema.py`, so that it keeps describing revision 0001
when the models move on.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

NAME = sa.String(255)
WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "autotune_models",
        sa.Column("name", NAME, nullable=False),
        sa.Column("architecture", NAME, nullable=False),
        sa.Column("hybrid_swa", sa.Boolean(), nullable=False),
        sa.Column("moe", sa.Boolean(), nullable=False),
        sa.Column("num_experts", sa.Integer(), nullable=False),
        sa.Column("top_k", sa.Integer(), nullable=False),
        sa.Column("swa_layers", sa.Integer(), nullable=False),
        sa.Column("full_layers", sa.Integer(), nullable=False),
        sa.Column("window", sa.Integer(), nullable=True),
        sa.Column("s_over_f", sa.Double(), nullable=True),
        sa.Column("swa_bytes_per_token", sa.BigInteger(), nullable=False),
        sa.Column("full_bytes_per_token", sa.BigInteger(), nullable=False),
        sa.Column("weight_bytes", sa.Double(), nullable=False),
        sa.Column("params_total", sa.Double(), nullable=False),
        sa.Column("params_active", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_autotune_models"),
    )
    op.create_table(
        "autotune_gpus",
        sa.Column("name", NAME, nullable=False),
        sa.Column("memory_mib", sa.Integer(), nullable=False),
        sa.Column("memory_class", NAME, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_autotune_gpus"),
    )
    op.create_table(
        "autotune_workloads",
        sa.Column("name", NAME, nullable=False),
        sa.Column("workload_class", NAME, nullable=False),
        sa.Column("mean_prompt", sa.Double(), nullable=False),
        sa.Column("mean_output", sa.Double(), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=True),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_autotune_workloads"),
    )
    op.create_table(
        "autotune_optima",
        sa.Column("model", NAME, nullable=False),
        sa.Column("gpu", NAME, nullable=False),
        sa.Column("workload", NAME, nullable=False),
        sa.Column("study_name", NAME, nullable=False),
        sa.Column("ratio", sa.Double(), nullable=False),
        sa.Column("objective_name", NAME, nullable=False),
        sa.Column("objective_value", sa.Double(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("default_ratio", sa.Double(), nullable=False),
        sa.Column("default_value", sa.Double(), nullable=True),
        sa.Column("gain", sa.Double(), nullable=True),
        sa.Column("trials", sa.Integer(), nullable=False),
        sa.Column("backend", NAME, nullable=False),
        sa.Column("simulated", sa.Boolean(), nullable=False),
        sa.Column("server_version", NAME, nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("updated_at", WHEN, nullable=False),
        sa.ForeignKeyConstraint(["model"], ["autotune_models.name"], name="fk_autotune_optima_model_autotune_models"),
        sa.ForeignKeyConstraint(["gpu"], ["autotune_gpus.name"], name="fk_autotune_optima_gpu_autotune_gpus"),
        sa.ForeignKeyConstraint(
            ["workload"], ["autotune_workloads.name"], name="fk_autotune_optima_workload_autotune_workloads"
        ),
        sa.PrimaryKeyConstraint("model", "gpu", "workload", name="pk_autotune_optima"),
    )
    op.create_table(
        "autotune_rules",
        sa.Column("key", NAME, nullable=False),
        sa.Column("moe", sa.Boolean(), nullable=False),
        sa.Column("workload_class", NAME, nullable=False),
        sa.Column("memory_class", NAME, nullable=True),
        sa.Column("ratio", sa.Double(), nullable=False),
        sa.Column("spread", sa.Double(), nullable=False),
        sa.Column("gain", sa.Double(), nullable=True),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("simulated", sa.Boolean(), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_autotune_rules"),
    )
    op.create_table(
        "autotune_exports",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model", NAME, nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("ratio", sa.Double(), nullable=False),
        sa.Column("provenance", sa.JSON(), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_autotune_exports"),
    )
    op.create_index("ix_autotune_exports_model", "autotune_exports", ["model"])


def downgrade() -> None:
    for table in ("autotune_exports", "autotune_rules", "autotune_optima", "autotune_workloads",
                  "autotune_gpus", "autotune_models"):
        op.drop_table(table)
