"""The ledger as it was before versioned migrations, plus `workers` and `holds`.

On an old SQLite ledger (made before Alembic) it adds the columns that ledger lacks
and the uniqueness guards; on an empty database it creates everything.

Revision ID: 0001
Revises:
"""

from alembic import op

from daemon.ledger import migrate, schema_0001

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    schema_0001.create(bind.exec_driver_sql, bind.dialect.name, migrate.columns_of(bind))


def downgrade() -> None:
    raise NotImplementedError("the ledger is never downgraded: restore a backup instead")
