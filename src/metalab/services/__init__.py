"""Agent-facing learning services: a store, plain service classes over it, and an HTTP API.

Three layers, one direction (see docs/architecture.md, "Layers"):

``store``   SQLAlchemy models and Alembic migrations (SQLite in WAL mode by default, any SQLAlchemy URL).
``experiments``, ``trust``, ``patterns``, ``jobs``
            plain classes that take a session and a workspace; the statistics they need come from
            numpy/scipy (``sequential`` and ``bandits`` hold the few formulas that no maintained
            library we can install exposes, each with its source).
``api``     FastAPI routes and pydantic schemas, bearer tokens per workspace, and a typed client.

The training core never imports this package.
"""
