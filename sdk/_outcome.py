"""How a workflow run ends, decided after each activation (the outcome policy, STYLE.md).

Returning completes the workflow; an uncaught ``FailureError`` fails it; ``CancelledError``
after a cancellation request cancels it (without one: the workflow cancelled itself, which
fails it); ``workflow.continue_as_new`` raises ``ContinueAsNewRequest``, which closes the run
as continued-as-new; any other exception fails the workflow *task* (``WorkflowTaskError``),
which the server retries.
"""

from __future__ import annotations

import asyncio
from typing import Any

from chronicle.history import commands as cmd
from chronicle.history.events import WorkflowTaskFailedCause
from chronicle.history.payloads import PayloadEncodingError, to_payload
from chronicle.history.values import Failure
from chronicle.sdk.errors import (
    CancelledFailure,
    FailureError,
    WorkflowTaskError,
    exception_to_failure,
)

__all__ = ["ContinueAsNewRequest", "run_outcome", "task_error"]


class ContinueAsNewRequest(BaseException):
    """Raised by ``workflow.continue_as_new``; a BaseException so ``except Exception`` in user
    code cannot swallow it."""

    def __init__(self, command: cmd.ContinueAsNew) -> None:
        super().__init__("continue as new")
        self.command = command


def task_error(message: str, exc: BaseException | None = None) -> WorkflowTaskError:
    """A ``WorkflowTaskError`` (cause ``workflow_error``) with ``exc``'s failure, if any."""
    failure = (
        exception_to_failure(exc)
        if exc is not None
        else Failure(message=message, type="WorkflowTaskError")
    )
    return WorkflowTaskError(message, cause=WorkflowTaskFailedCause.WORKFLOW_ERROR, failure=failure)


def run_outcome(
    root: asyncio.Task[Any] | None,
    handler_error: BaseException | None,
    cancel_requested: bool,
    workflow_name: str,
) -> cmd.Command | None:
    """The command that closes the run, or None while it goes on (policy: module docstring).

    ``root`` is the task of the workflow function, ``handler_error`` the first error of a
    signal or update handler; raises ``WorkflowTaskError`` when the task must fail.
    """
    error = handler_error
    if error is None:
        if root is None or not root.done():
            return None
        if root.cancelled():
            error = asyncio.CancelledError()
        else:
            error = root.exception()
            if error is None:
                try:
                    return cmd.CompleteWorkflow(result=to_payload(root.result()))
                except PayloadEncodingError as exc:
                    raise task_error(
                        f"cannot encode the result of workflow {workflow_name}: {exc}",
                        exc,
                    ) from exc
    if isinstance(error, ContinueAsNewRequest):
        return error.command
    if isinstance(error, asyncio.CancelledError):
        if cancel_requested:
            return cmd.CancelWorkflow()
        failure = exception_to_failure(CancelledFailure("the workflow cancelled itself"))
        return cmd.FailWorkflow(failure=failure)
    if isinstance(error, FailureError):
        return cmd.FailWorkflow(failure=error.failure)
    if isinstance(error, WorkflowTaskError):
        raise error
    if isinstance(error, Exception):
        raise task_error(
            f"workflow {workflow_name} raised {type(error).__name__}: {error}", error
        ) from error
    raise error
