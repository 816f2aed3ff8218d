"""Postgres storage: the pool, migrations, named SQL, row changes and LISTEN/NOTIFY."""
