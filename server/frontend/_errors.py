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
from chronicle.server.store.pool import RETRYABLE, StaleRead, unavailable_cause

_CODES: dict[type[errors.ServerError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Cancelled: grpc.StatusCode.CANCELLED,
}

_UNSTORABLE_TEXT: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.CharacterNotInRepertoireError,  # 22021: NUL in a text parameter
    asyncpg.exceptions.UntranslatableCharacterError,  # 22P05: \u0000 in a jsonb value
)
"""Postgres refuses these characters in text and jsonb: a NUL in an id, a name, a message."""

R = TypeVar("R")
Handler = Callable[[Any, Any, Any], Awaitable[R]]


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """The gRPC status for a known error, or None for an unexpected one."""
    if isinstance(exc, errors.ServerError):
        return _CODES.get(type(exc), grpc.StatusCode.INTERNAL), str(exc)
    if isinstance(exc, InvalidCommandError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, _UNSTORABLE_TEXT):
        # Only the request's own strings reach a statement as text or jsonb. The statement
        # failed and its transaction was rolled back: nothing of it was written.
        return grpc.StatusCode.INVALID_ARGUMENT, (
            f"a string in the request contains a NUL character (\\x00), which the server "
            f"cannot store: {exc}"
        )
    cause = unavailable_cause(exc)
    if cause is not None:
        # Retryable: clients and workers try again (a request that may have committed is
        # safe to repeat: docs/decisions.md 18).
        detail = str(cause) or type(cause).__name__
        return grpc.StatusCode.UNAVAILABLE, f"database unavailable: {detail}"
    if isinstance(exc, RETRYABLE):
        # in_transaction ran it again and again; a statement outside one is not rerun.
        return grpc.StatusCode.ABORTED, (
            f"the call's transaction was rolled back by concurrent ones "
            f"({type(exc).__name__}: {exc}); retry the call"
        )
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
            StaleRead,
        ) as exc:
            mapped = status_of(exc)
            if mapped is None:
                telemetry.logger(rpc=name).exception("database error")
                await context.abort(grpc.StatusCode.INTERNAL, f"{name}: internal error: {exc}")
                raise AssertionError("unreachable") from exc
            if isinstance(exc, RETRYABLE):
                telemetry.logger(rpc=name).warning(
                    "call aborted: its transaction was rolled back on every attempt",
                    error=type(exc).__name__,
                    message=str(exc),
                )
            await context.abort(*mapped)
            raise AssertionError("unreachable") from exc
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            telemetry.logger(rpc=name).exception("unexpected error")
            await context.abort(grpc.StatusCode.INTERNAL, f"{name}: internal error: {exc}")
            raise AssertionError("unreachable") from exc

    return wrapper
