"""The one place where errors become gRPC statuses (messages name the field or id)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import grpc

from chronicle.history.errors import InvalidCommandError
from chronicle.server import errors, telemetry
from chronicle.server.frontend._validate import check_identifiers
from chronicle.server.store.pool import unavailable_cause

_CODES: dict[type[errors.ServerError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
}

R = TypeVar("R")
Handler = Callable[[Any, Any, Any], Awaitable[R]]


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """The gRPC status for a known error, or None for an unexpected one."""
    if isinstance(exc, errors.ServerError):
        return _CODES.get(type(exc), grpc.StatusCode.INTERNAL), str(exc)
    if isinstance(exc, InvalidCommandError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    cause = unavailable_cause(exc)
    if cause is not None:
        # Retryable: clients and workers try again (a request that may have committed is
        # safe to repeat: docs/decisions.md 18).
        detail = str(cause) or type(cause).__name__
        return grpc.StatusCode.UNAVAILABLE, f"database unavailable: {detail}"
    return None


def rpc(handler: Handler[R]) -> Handler[R]:
    """Wrap a servicer method: check the request's identifiers (``check_identifiers``), map
    domain errors to statuses, log unexpected ones as INTERNAL."""
    name = handler.__name__

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: Any) -> R:
        try:
            check_identifiers(request)
            return await handler(self, request, context)
        except (
            errors.ServerError,
            InvalidCommandError,
            OSError,
            asyncpg.exceptions.PostgresError,
            asyncpg.exceptions.InterfaceError,
        ) as exc:
            mapped = status_of(exc)
            if mapped is None:
                telemetry.logger(rpc=name).exception("database error")
                await context.abort(grpc.StatusCode.INTERNAL, f"{name}: internal error: {exc}")
                raise AssertionError("unreachable") from exc
            await context.abort(*mapped)
            raise AssertionError("unreachable") from exc
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            telemetry.logger(rpc=name).exception("unexpected error")
            await context.abort(grpc.StatusCode.INTERNAL, f"{name}: internal error: {exc}")
            raise AssertionError("unreachable") from exc

    return wrapper
