"""The floor for throughput.py: a minimal FastAPI + SQLAlchemy app that only inserts an outcome row.

POST /outcomes validates a small body and inserts one row in its own transaction (no auth, no idempotency,
no running sums, no analysis); POST /assignments reads the variants' counts and answers the least-pulled
one. The same uvicorn settings as ``metalab serve``; SQLite in WAL mode with synchronous=NORMAL and a busy
timeout, as the services' store.
Usage: python experiments/services/minimal_insert_app.py --port 8001 --database-url sqlite:///minimal.db
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from sqlalchemy import Column, DateTime, Float, Integer, MetaData, String, Table, create_engine, event, insert, select

METADATA = MetaData()
OUTCOMES = Table(
    "outcomes",
    METADATA,
    Column("id", Integer, primary_key=True),
    Column("variant", String(100)),
    Column("value", Float),
    Column("unit", String(200), nullable=True),
    Column("created_at", DateTime(timezone=True)),
)
VARIANTS = Table(
    "variants", METADATA, Column("id", Integer, primary_key=True), Column("name", String(100)), Column("count", Integer)
)


class OutcomeIn(BaseModel):
    variant: str
    value: float
    unit: str | None = None


def build(database_url: str) -> FastAPI:
    engine = create_engine(database_url, pool_size=10, max_overflow=20)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(connection, _record) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

    METADATA.create_all(engine)
    with engine.begin() as connection:
        if connection.execute(select(VARIANTS.c.id)).first() is None:
            connection.execute(insert(VARIANTS), [{"name": "a", "count": 0}, {"name": "b", "count": 0}])
    app = FastAPI()

    @app.post("/outcomes", status_code=201)
    def record(body: OutcomeIn) -> dict:
        with engine.begin() as connection:
            new_id = connection.execute(
                insert(OUTCOMES)
                .values(variant=body.variant, value=body.value, unit=body.unit, created_at=datetime.now(UTC))
                .returning(OUTCOMES.c.id)
            ).scalar()
        return {"id": new_id}

    @app.post("/assignments")
    def assign() -> dict:
        with engine.connect() as connection:
            rows = connection.execute(select(VARIANTS.c.name, VARIANTS.c.count)).all()
        return {"variant": min(rows, key=lambda r: r.count).name}

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    args = parser.parse_args()
    uvicorn.run(build(args.database_url), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
