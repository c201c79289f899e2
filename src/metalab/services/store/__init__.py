"""The store: SQLAlchemy models, engine set-up (SQLite WAL by default) and Alembic migrations."""

from metalab.services.store.database import create_store_engine, migrate, read_session_factory, session_factory
from metalab.services.store.models import Base

__all__ = ["Base", "create_store_engine", "migrate", "read_session_factory", "session_factory"]
