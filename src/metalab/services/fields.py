"""Constrained field types shared by the core dataclasses that are API bodies and the API's schemas.

Declared once so that a limit the server enforces is the limit the OpenAPI schema states: strings have a
length limit and no NUL character (PostgreSQL rejects it), numbers are finite and bounded, and ids fit a
32-bit SQL INTEGER (SQLAlchemy's type for ``int`` columns: 32-bit on PostgreSQL, so a larger value would
overflow in the database, a 500, instead of failing validation).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, Field, StringConstraints

MAX_ID = 2**31 - 1
NO_NUL = r"^[^\x00]*$"
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]
ShortName = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=NO_NUL)]
Finite = Annotated[float, Field(ge=-1e12, le=1e12)]


def _integral_float_to_int(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


# an int of a strict body: JSON Schema's ``integer`` includes 2.0, so it is taken as 2; "2", true and 2.5 are not.
# Bounds go on the field (``x: JsonInt = Field(ge=1)``); inside another Annotated or a union, use json_int(ge=1).
JsonInt = Annotated[int, BeforeValidator(_integral_float_to_int)]


def json_int(**bounds: int) -> Any:
    """:data:`JsonInt` with bounds of its own, for a dict's values or a member of a union (where the field's
    bounds would not reach the int, and the schema would lose its minimum and maximum)."""
    return Annotated[int, Field(**bounds), BeforeValidator(_integral_float_to_int)]


# a core dataclass used as a request body: unknown keys refused, no infinities or NaN
STRICT_BODY = ConfigDict(extra="forbid", allow_inf_nan=False)
