"""Constrained field types shared by the core dataclasses that are API bodies and the API's schemas.

Declared once so that a limit the server enforces is the limit the OpenAPI schema states: strings have a
length limit and no NUL character (PostgreSQL rejects it), numbers are finite and bounded, and ids fit a
32-bit SQL INTEGER (SQLAlchemy's type for ``int`` columns: 32-bit on PostgreSQL, so a larger value would
overflow in the database, a 500, instead of failing validation).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints

MAX_ID = 2**31 - 1
NO_NUL = r"^[^\x00]*$"
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]
ShortName = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=NO_NUL)]
Finite = Annotated[float, Field(ge=-1e12, le=1e12)]
# a core dataclass used as a request body: unknown keys refused, no infinities or NaN
STRICT_BODY = ConfigDict(extra="forbid", allow_inf_nan=False)
