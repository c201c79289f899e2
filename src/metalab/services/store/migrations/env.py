"""Alembic environment: runs against the engine that :func:`metalab.services.store.migrate` hands over."""

from alembic import context

from metalab.services.store.models import Base

config = context.config
engine = config.attributes["engine"]

with engine.connect() as connection:
    context.configure(
        connection=connection, target_metadata=Base.metadata, render_as_batch=connection.dialect.name == "sqlite"
    )  # SQLite cannot ALTER most things
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
