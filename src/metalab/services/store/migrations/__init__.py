"""Alembic migrations of the services store (shipped in the package so an installed metalab can migrate)."""
