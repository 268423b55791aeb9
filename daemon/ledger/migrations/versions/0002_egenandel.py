"""The egenandel register (#21): table `egenandeler` and `payments.kind`.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

from daemon.ledger import migrate, schema_0002

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    schema_0002.create(bind.exec_driver_sql, bind.dialect.name, migrate.columns_of(bind))


def downgrade() -> None:
    raise NotImplementedError("the ledger is never downgraded: restore a backup instead")
