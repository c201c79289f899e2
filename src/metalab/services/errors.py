"""Errors a service raises for a bad request; the API turns each into a 4xx with its message."""

from __future__ import annotations

from metalab.errors import MetalabError


class ServiceError(MetalabError):
    """A request that cannot be carried out as asked; ``status_code`` is the HTTP status to answer with."""

    status_code = 400


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    status_code = 409


class Unprocessable(ServiceError):
    status_code = 422
