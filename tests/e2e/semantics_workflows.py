"""Workflows for the workflow-semantics tests (timers, signals, cancellation, children,
continue-as-new, deterministic values) and the golden histories that record them.

Served by in-process workers in tests/sdk_io/test_semantics_*.py and by ``chronicle worker
tests.e2e.semantics_workflows`` subprocesses (golden-history generation, crash tests).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from chronicle import ApplicationError, ChildWorkflowError, activity, workflow


@activity
async def echo(value: Any) -> Any:
    """Returns its argument (records a value in the history as an activity input)."""
    return value


@activity
async def compensate(what: str) -> str:
    """A compensating step run after a cancellation."""
    return f"compensated {what}"


@activity(heartbeat_timeout=timedelta(seconds=10))
async def blocks_until_cancelled() -> str:
    """Heartbeats for up to ~2 s; a cancellation request ends it early."""
    for _ in range(40):
        activity.heartbeat()
        await asyncio.sleep(0.05)
    return "finished"


@workflow
async def sleeper(seconds: float) -> str:
    """One durable timer."""
    await workflow.sleep(seconds)
    return "woke"


@workflow
async def timers() -> list[str]:
    """workflow.sleep, asyncio.wait_for and asyncio.timeout: each a durable timer."""
    out = []
    await workflow.sleep(timedelta(milliseconds=100))
    out.append("slept")
    try:
        await asyncio.wait_for(workflow.wait_signal("never"), timeout=0.1)
    except TimeoutError:
        out.append("wait_for timed out")
    try:
        async with asyncio.timeout(0.1):
            await workflow.wait_signal("never")
    except TimeoutError:
        out.append("timeout fired")
    return out


@workflow
async def bad_durations() -> list[str]:
    """Zero and negative durations are errors at the call; nothing is recorded."""
    errors = []
    for call in (
        lambda: workflow.sleep(0),
        lambda: workflow.sleep(timedelta(seconds=-1)),
        lambda: workflow.wait_signal("x", timeout=0),
        lambda: workflow.wait_condition(lambda: False, timeout=-2.5),
    ):
        try:
            call()
        except ValueError as exc:
            errors.append(str(exc))
    return errors


@workflow
async def collects(count: int) -> list[Any]:
    """Registers a handler for "add" after a timer (signals before it are buffered), and waits
    for ``count`` values."""
    items: list[Any] = []
    await workflow.sleep(0.05)

    def add(value: int) -> None:
        items.append(value)

    workflow.on_signal("add", add)
    await workflow.wait_condition(lambda: len(items) >= count)
    return items


@workflow
async def waits_for_signal(timeout: float) -> str:
    """wait_signal with a timeout: the signal's value, or "timed out"."""
    try:
        return str(await workflow.wait_signal("go", timeout=timeout))
    except TimeoutError:
        return "timed out"


@workflow
async def waits_for_condition(timeout: float) -> str:
    """wait_condition with a timeout, satisfied by a signal handler."""
    flags: list[bool] = []
    workflow.on_signal("set", lambda: flags.append(True))
    try:
        await workflow.wait_condition(lambda: bool(flags), timeout=timedelta(seconds=timeout))
    except TimeoutError:
        return "timed out"
    return "condition met"


@workflow
async def waits_forever() -> str:
    """Blocks until cancelled or terminated; does not catch the cancellation."""
    await workflow.wait_condition(lambda: False)
    return "unreachable"


@workflow
async def cancellable(child_id: str) -> str:
    """An activity and a child in flight; a cancellation asks both to cancel, then the workflow
    compensates and returns (so the run completes instead of being cancelled)."""
    try:
        await asyncio.gather(
            blocks_until_cancelled(), workflow.execute_child(waits_forever, id=child_id)
        )
    except asyncio.CancelledError:
        return await compensate("order")
    return "not cancelled"


@workflow
async def child_echo(text: str) -> str:
    """A child: waits for signal "go" and returns ``text`` with its value."""
    value = await workflow.wait_signal("go")
    return f"{text}:{value}"


@workflow
async def child_fails(reason: str) -> str:
    """A child that fails with an application error."""
    raise ApplicationError(f"child says {reason}", type="ChildTrouble", non_retryable=True)


@workflow
async def parent_of_failing_child(reason: str) -> str:
    """Catches the ChildWorkflowError and reports its cause chain."""
    try:
        return await workflow.execute_child(child_fails, reason)
    except ChildWorkflowError as err:
        cause = err.cause
        inner = cause.__cause__ or getattr(cause, "cause", None)
        return f"{type(err).__name__}|{cause}|{inner}"


@workflow
async def signals_a_finished_child() -> str:
    """Signalling a child that already closed raises at the await (type WorkflowNotFound)."""
    handle = await workflow.start_child(sleeper, 0.01)
    assert handle.run_id
    await handle
    try:
        await handle.signal("late")
    except ApplicationError as err:
        return f"{err.type}: {err}"
    return "delivered"


@workflow
async def parent_with_policies(prefix: str) -> list[str]:
    """Starts one child per parent-close policy, waits for "finish", returns the child ids."""
    ids = []
    for policy in ("terminate", "request_cancel", "abandon"):
        handle = await workflow.start_child(
            waits_forever, id=f"{prefix}-{policy}", parent_close_policy=policy
        )
        ids.append(handle.id)
    await workflow.wait_signal("finish")
    return ids


@workflow
async def chain(remaining: int, runs: list[str]) -> list[str]:
    """Continues as new ``remaining`` times; returns the run ids of the chain."""
    runs = [*runs, workflow.info().run_id]
    if remaining > 0:
        await workflow.sleep(0.01)
        workflow.continue_as_new(remaining - 1, runs)
    return runs


@workflow
async def parent_of_chain(remaining: int) -> list[str]:
    """A child that continues as new ``remaining`` times: the parent gets its last run's result."""
    child_id = f"{workflow.info().workflow_id}-child"
    result: list[str] = await workflow.execute_child(chain, remaining, [], id=child_id)
    return result


def _draws() -> dict[str, Any]:
    info = workflow.info()
    return {
        "now": workflow.now().isoformat(),
        "random": workflow.random().random(),
        "uuid": str(workflow.uuid4()),
        "info": [info.namespace, info.workflow_id, info.run_id, info.workflow_type],
    }


@workflow
async def draws() -> dict[str, Any]:
    """Deterministic values before and after a signal; logs once per draw."""
    first = _draws()
    workflow.logger.info("first draws %s", first["uuid"])
    await echo(first)  # the live values, recorded in the history as the activity's input
    await workflow.wait_signal("go")
    second = _draws()
    workflow.logger.info("second draws %s", second["uuid"])
    return {"first": first, "second": second}


@workflow
async def everything(text: str) -> str:
    """Every event kind of the workflow-semantics issue in one run (a golden history): a patch
    marker, timers (fired and cancelled), signals (handler and wait_signal), a child that is
    signalled and awaited, deterministic values, and a cancellation that is caught and
    compensated by an activity."""
    notes: list[str] = []
    workflow.on_signal("note", notes.append)
    version = "v2" if workflow.patched("semantics-v2") else "v1"
    await workflow.sleep(0.05)
    try:
        async with asyncio.timeout(0.05):
            await workflow.wait_signal("never")
    except TimeoutError:
        notes.append("timeout")
    child = await workflow.start_child(child_echo, text, id=f"{workflow.info().workflow_id}-kid")
    await child.signal("go", "ping")
    echoed = await child
    approved = await workflow.wait_signal("approve", timeout=timedelta(minutes=5))
    token = workflow.uuid4().hex[:8]
    try:
        await workflow.wait_condition(lambda: False)
    except asyncio.CancelledError:
        done = await compensate(text)
        return f"{version}|{echoed}|{approved}|{','.join(notes)}|{len(token)}|{done}"
    return "not cancelled"


@workflow
async def continues_once(runs: int) -> int:
    """Golden: a timer, then continue-as-new (the first run's history ends with it)."""
    await workflow.sleep(0.01)
    if runs > 0:
        workflow.continue_as_new(runs - 1)
    return runs


SEMANTICS_WORKFLOWS = [
    sleeper,
    timers,
    bad_durations,
    collects,
    waits_for_signal,
    waits_for_condition,
    waits_forever,
    cancellable,
    child_echo,
    child_fails,
    parent_of_failing_child,
    signals_a_finished_child,
    parent_with_policies,
    chain,
    parent_of_chain,
    draws,
    everything,
    continues_once,
]
SEMANTICS_ACTIVITIES = [echo, compensate, blocks_until_cancelled]
