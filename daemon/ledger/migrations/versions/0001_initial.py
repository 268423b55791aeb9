"""The ledger as it was before versioned migrations, plus `workers` and `holds`.

On an old SQLite ledger (made before Alembic) it adds the columns that ledger lacks
and the uniqueness guards; on an empty database it creates everything.

Revision ID: 0001
Revises:
"""

from alembic import op

from daemon.ledger import schema_0001

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    dialect = bind.dialect.name

    def columns(table: str) -> set[str]:
        if dialect == "sqlite":
            rows = bind.exec_driver_sql(f"PRAGMA table_info({table})").fetchall()
            return {row[1] for row in rows}
        rows = bind.exec_driver_sql(
            "SELECT column_name FROM information_schema.columns"
            f" WHERE table_schema = current_schema() AND table_name = '{table}'"
        ).fetchall()
        return {row[0] for row in rows}

    schema_0001.create(bind.exec_driver_sql, dialect, columns)


def downgrade() -> None:
    raise NotImplementedError("the ledger is never downgraded: restore a backup instead")
