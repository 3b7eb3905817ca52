"""Domain errors of the control plane, each with the HTTP status and problem type the API answers with.

Every error message is one sentence a user can act on; the API turns them into RFC 9457 problem documents and
the CLI into one line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

__all__ = [
    "ConflictError",
    "ControlPlaneError",
    "ForbiddenError",
    "InvalidError",
    "NotFoundError",
    "RateLimitedError",
    "UnauthorizedError",
]


class ControlPlaneError(Exception):
    """Base class: ``status`` and ``kind`` (the problem type's last path segment) say how the API reports it."""

    status: ClassVar[int] = 400
    kind: ClassVar[str] = "bad-request"
    title: ClassVar[str] = "Bad request"

    def __init__(self, detail: str, *, extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = dict(extra or {})


class NotFoundError(ControlPlaneError):
    status, kind, title = 404, "not-found", "Not found"


class ConflictError(ControlPlaneError):
    status, kind, title = 409, "conflict", "Conflict"


class ForbiddenError(ControlPlaneError):
    status, kind, title = 403, "forbidden", "Forbidden"


class UnauthorizedError(ControlPlaneError):
    status, kind, title = 401, "unauthorized", "Authentication required"


class InvalidError(ControlPlaneError):
    """Input that is well-formed but wrong; ``errors`` lists each problem (CSV imports: with line numbers)."""

    status, kind, title = 422, "invalid", "Invalid input"

    def __init__(self, detail: str, *, errors: Sequence[Mapping[str, Any]] = ()) -> None:
        super().__init__(detail, extra={"errors": [dict(e) for e in errors]} if errors else None)
        self.errors = list(errors)


class RateLimitedError(ControlPlaneError):
    status, kind, title = 429, "rate-limited", "Too many attempts"

    def __init__(self, detail: str, *, retry_after: float) -> None:
        super().__init__(detail, extra={"retry_after": max(1, round(retry_after + 0.5))})
        self.retry_after = max(1, round(retry_after + 0.5))
