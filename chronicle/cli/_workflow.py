"""``chronicle workflow ...``: start, inspect and talk to workflows."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import timedelta
from typing import Any

from chronicle.cli._common import CommandError, connect, parse_inputs, seconds, to_json
from chronicle.cli._format import describe_text, execution_row, table
from chronicle.cli._timeline import HEADER, Timeline
from chronicle.history import codec
from chronicle.sdk.errors import (
    WorkflowCancelled,
    WorkflowFailed,
    WorkflowTerminated,
    WorkflowTimedOut,
)
from chronicle.sdk.testing import HISTORY_FORMAT, HISTORY_VERSION

__all__ = ["add_parser"]


def add_parser(commands: Any) -> None:
    """Register ``workflow`` and its subcommands."""
    workflow = commands.add_parser("workflow", help="start, inspect and talk to workflows")
    sub = workflow.add_subparsers(dest="workflow_command", metavar="COMMAND", required=True)

    start = sub.add_parser("start", help="start a workflow; prints its run id")
    start.add_argument("type", metavar="TYPE", help="workflow type name")
    start.add_argument("--id", required=True, help="workflow id")
    start.add_argument("--task-queue", "-q", required=True)
    _inputs(start)
    start.add_argument(
        "--id-conflict-policy",
        default="fail",
        choices=["fail", "use_existing", "terminate_existing"],
    )
    start.add_argument(
        "--id-reuse-policy",
        default="allow_duplicate",
        choices=["allow_duplicate", "allow_duplicate_failed_only", "reject_duplicate"],
    )
    for name in ("execution-timeout", "run-timeout", "task-timeout", "start-delay"):
        start.add_argument(f"--{name}", type=seconds, metavar="SECONDS", default=None)
    start.set_defaults(run=_sync(_start))

    result = sub.add_parser("result", help="wait for a workflow and print its result as JSON")
    _target(result)
    result.set_defaults(run=_sync(_result))

    describe = sub.add_parser("describe", help="status, type, times and pending work")
    _target(describe)
    describe.add_argument("--json", action="store_true", help="print JSON")
    describe.set_defaults(run=_sync(_describe))

    history = sub.add_parser("history", help="the event history, readable or JSON")
    _target(history)
    history.add_argument(
        "--json", action="store_true", help="write the documented JSON export (replayable)"
    )
    history.add_argument(
        "--full", action="store_true", help="every attribute, payloads not shortened"
    )
    history.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="keep printing new events as they are appended; exits when the run closes",
    )
    history.set_defaults(run=_sync(_history))

    listing = sub.add_parser("list", help="list workflows")
    listing.add_argument(
        "--query", default="", help="e.g. \"status = 'running' AND type = 'order'\""
    )
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(run=_sync(_list))

    for name, help_text in (
        ("signal", "send a signal"),
        ("query", "ask a query handler"),
        ("update", "run an update handler and print its result"),
    ):
        command = sub.add_parser(name, help=help_text)
        _target(command)
        command.add_argument("name", metavar="NAME")
        _inputs(command)
        command.set_defaults(run=_sync(_call), call=name)

    stack = sub.add_parser(
        "stack", help="where a running workflow waits: every coroutine and its file:line"
    )
    _target(stack)
    stack.set_defaults(run=_sync(_stack))

    reset = sub.add_parser(
        "reset",
        help="rerun a workflow from a workflow-task boundary (prints the new run id)",
        description="Terminate the run (if open) and start a new run whose history is the old "
        "one up to a WorkflowTaskCompleted event and that task's commands; today's code carries "
        "it on from there. The old run keeps its history.",
    )
    _target(reset)
    point = reset.add_mutually_exclusive_group(required=True)
    point.add_argument(
        "--event-id", type=int, default=None, help="a WorkflowTaskCompleted event id"
    )
    point.add_argument(
        "--to",
        choices=["last-good"],
        default=None,
        help="last-good: the last completed workflow task before the first failure",
    )
    reset.add_argument(
        "--reapply-signals",
        action="store_true",
        help="re-send the signals received after the reset point to the new run",
    )
    reset.add_argument("--reason", default="")
    reset.set_defaults(run=_sync(_reset))

    for name, help_text in (
        ("cancel", "ask a workflow to cancel"),
        ("terminate", "close a workflow at once"),
    ):
        command = sub.add_parser(name, help=help_text)
        _target(command)
        command.add_argument("--reason", default="")
        command.set_defaults(run=_sync(_stop), call=name)


def _inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input",
        "-i",
        action="append",
        metavar="JSON",
        help="an argument as JSON; repeat for several (strings need quotes)",
    )


def _target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workflow_id", metavar="ID")
    parser.add_argument("--run-id", default=None, help="a specific run (default: the latest)")


def _sync(command: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        status: int = asyncio.run(command(args))
        return status

    return run


async def _start(args: argparse.Namespace) -> int:
    inputs = parse_inputs(args.input)
    options: dict[str, Any] = {}
    for name in ("execution_timeout", "run_timeout", "task_timeout", "start_delay"):
        value = getattr(args, name)
        if value is not None:
            options[name] = timedelta(seconds=value)
    async with connect(args) as client:
        handle = await client.start(
            args.type,
            *inputs,
            id=args.id,
            task_queue=args.task_queue,
            id_conflict_policy=args.id_conflict_policy,
            id_reuse_policy=args.id_reuse_policy,
            **options,
        )
    print(handle.run_id)
    return 0


async def _result(args: argparse.Namespace) -> int:
    async with connect(args, retry_timeout=60.0) as client:
        handle = client.get_handle(args.workflow_id, run_id=args.run_id)
        try:
            value = await handle.result()
        except WorkflowFailed as exc:
            cause = exc.cause
            kind = getattr(cause, "type", None) or type(cause).__name__
            detail = f": {kind}: {cause}" if cause is not None else ""
            raise CommandError(f"workflow {args.workflow_id} failed{detail}") from None
        except (WorkflowCancelled, WorkflowTerminated, WorkflowTimedOut) as exc:
            raise CommandError(str(exc)) from None
    print(to_json(value))
    return 0


async def _describe(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        description = await client.get_handle(args.workflow_id, run_id=args.run_id).describe()
    if args.json:
        print(to_json(_jsonable(description), indent=2))
    else:
        print(describe_text(description))
    return 0


async def _history(args: argparse.Namespace) -> int:
    if args.follow:
        if args.json:
            raise CommandError("--follow prints the timeline; it cannot be combined with --json")
        return await _follow(args)
    async with connect(args) as client:
        handle = client.get_handle(args.workflow_id, run_id=args.run_id)
        events = await handle.history()
        run_id = args.run_id
        if run_id is None and events:
            run_id = (await handle.describe()).run_id
    if args.json:
        document = {
            "format": HISTORY_FORMAT,
            "version": HISTORY_VERSION,
            "namespace": args.namespace,
            "workflow_id": args.workflow_id,
            "run_id": run_id or "",
            "events": [codec.event_to_dict(e) for e in events],
        }
        json.dump(document, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    timeline = Timeline(full=args.full)
    print(HEADER)
    for event in events:
        print(timeline.line(event))
    return 0


async def _follow(args: argparse.Namespace) -> int:
    """Print the timeline, then each new event as the server appends it, until the run closes."""
    timeline = Timeline(full=args.full)
    print(HEADER, flush=True)
    async with connect(args) as client:
        handle = client.get_handle(args.workflow_id, run_id=args.run_id)
        async for event in handle.follow_history():
            print(timeline.line(event), flush=True)
    return 0


async def _list(args: argparse.Namespace) -> int:
    rows: list[list[str]] = []
    async with connect(args) as client:
        async for execution in client.list(args.query):
            if len(rows) >= args.limit:
                break
            if args.json:
                print(to_json(_jsonable(execution)))
            rows.append(execution_row(execution))
    if not args.json:
        print(table(["WORKFLOW ID", "RUN ID", "TYPE", "STATUS", "STARTED", "CLOSED"], rows))
    return 0


async def _call(args: argparse.Namespace) -> int:
    inputs = parse_inputs(args.input)
    async with connect(args) as client:
        handle = client.get_handle(args.workflow_id, run_id=args.run_id)
        if args.call == "signal":
            await handle.signal(args.name, *inputs)
            print(f"signalled {args.workflow_id}: {args.name}", file=sys.stderr)
            return 0
        if args.call == "query":
            value = await handle.query(args.name, *inputs)
        else:
            value = await handle.update(args.name, *inputs)
    print(to_json(value))
    return 0


async def _stack(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        print(await client.get_handle(args.workflow_id, run_id=args.run_id).stack())
    return 0


async def _reset(args: argparse.Namespace) -> int:
    if args.event_id is not None and args.event_id < 1:
        raise CommandError(f"--event-id must be a positive event id, got {args.event_id}", 2)
    async with connect(args) as client:
        handle = client.get_handle(args.workflow_id, run_id=args.run_id)
        new = await handle.reset(
            args.event_id,
            to_last_good=args.to == "last-good",
            reapply_signals=args.reapply_signals,
            reason=args.reason,
        )
    print(new.run_id)
    print(f"reset {args.workflow_id}: new run {new.run_id}", file=sys.stderr)
    return 0


async def _stop(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        handle = client.get_handle(args.workflow_id, run_id=args.run_id)
        if args.call == "cancel":
            await handle.cancel(args.reason)
            print(f"cancellation requested for {args.workflow_id}", file=sys.stderr)
        else:
            await handle.terminate(args.reason)
            print(f"terminated {args.workflow_id}", file=sys.stderr)
    return 0


def _jsonable(value: Any) -> Any:
    """A description dataclass as JSON-compatible data (failures and times included)."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
