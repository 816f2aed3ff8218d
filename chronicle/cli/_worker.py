"""``chronicle worker MODULE``: serve every ``@workflow``/``@activity`` of a module."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import signal
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from chronicle import eventloop
from chronicle.cli._common import CommandError, connect, seconds
from chronicle.sdk._definitions import activity_definition, workflow_definition

__all__ = ["add_parser", "load_module", "module_definitions"]


def add_parser(commands: Any) -> None:
    """Register ``worker``."""
    worker = commands.add_parser(
        "worker",
        help="serve the workflows and activities of a module",
        description="Import MODULE (a dotted module name or a path to a .py file) and serve "
        "every @workflow and @activity it defines until interrupted.",
    )
    worker.add_argument("module", metavar="MODULE")
    worker.add_argument("--task-queue", "-q", required=True)
    worker.add_argument("--max-concurrent-activities", type=int, default=100)
    worker.add_argument("--max-concurrent-workflow-tasks", type=int, default=20)
    worker.add_argument("--identity", default=None, help="worker identity (default host:pid:uuid)")
    worker.add_argument(
        "--determinism-guard",
        default="warn",
        choices=["warn", "strict", "off"],
        help="workflow code calling time.time, datetime.now, random, uuid4, sleep, open, "
        "sockets or threads: warn (default), strict (fail the workflow task), off",
    )
    worker.add_argument(
        "--inline-activity-budget",
        type=seconds,
        default=0.02,
        metavar="SECONDS",
        help="how long a workflow task's completion waits for the activities it schedules that "
        "this worker runs before recording them (default 0.02; 0: off)",
    )
    worker.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    worker.set_defaults(run=_run_worker)


def load_module(spec: str) -> ModuleType:
    """Import ``spec``: a ``.py`` file path or a dotted name.

    As with ``python FILE`` and ``python -m NAME``, the file's folder (for a path) and the
    working directory join ``sys.path``, so the module can import its own project's packages.
    """
    path = Path(spec)
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    if spec.endswith(".py") or path.is_file():
        if not path.is_file():
            raise CommandError(f"no such file: {spec}")
        folder = str(path.resolve().parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        name = path.stem
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise CommandError(f"cannot import {spec}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        raise CommandError(f"cannot import module {spec!r}: {exc}") from None


def module_definitions(module: ModuleType) -> tuple[list[Any], list[Any]]:
    """The ``@workflow`` and ``@activity`` objects at the top level of ``module`` (by name)."""
    workflows: dict[str, Any] = {}
    activities: dict[str, Any] = {}
    for value in vars(module).values():
        try:
            workflows.setdefault(workflow_definition(value).name, value)
            continue
        except TypeError:
            pass
        try:
            activities.setdefault(activity_definition(value).name, value)
        except TypeError:
            pass
    return list(workflows.values()), list(activities.values())


def _configure_logging(level: str) -> None:
    import logging

    import structlog

    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        )
    )
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(message)s")


def _run_worker(args: argparse.Namespace) -> int:
    _configure_logging(args.log_level)
    module = load_module(args.module)
    workflows, activities = module_definitions(module)
    if not workflows and not activities:
        raise CommandError(f"{args.module} defines no @workflow or @activity functions")
    status = eventloop.run(_serve(args, workflows, activities))
    _exit_past_stuck_threads(status)
    return status


def _exit_past_stuck_threads(status: int) -> None:
    """Exit now if user code still holds a thread after the worker stopped.

    A blocking sync activity that outlived the drain's grace, or workflow code stuck in a
    deadlock, keeps its pool thread: Python cannot stop a thread, and at exit it would wait
    for every pool thread, so the process would outlive SIGTERM (and a second one) for as
    long as that code runs. Their tasks are already given back (failed as interrupted by the
    shutdown, or timed out), so nothing is lost by not waiting."""
    import logging
    import os
    import threading

    stuck = sorted(
        {
            thread.name.rsplit("_", 1)[0]
            for thread in threading.enumerate()
            if thread is not threading.main_thread() and not thread.daemon and thread.is_alive()
        }
    )
    if not stuck:
        return
    print(
        f"worker stopped; not waiting for threads still in user code ({', '.join(stuck)})",
        file=sys.stderr,
        flush=True,
    )
    logging.shutdown()
    sys.stdout.flush()
    os._exit(status)


async def _serve(args: argparse.Namespace, workflows: list[Any], activities: list[Any]) -> int:
    from chronicle.sdk.worker import Worker  # imported late: other commands need no worker code

    async with connect(args, connect_timeout=60.0, retry_timeout=60.0) as client:
        worker = Worker(
            client,
            task_queue=args.task_queue,
            workflows=workflows,
            activities=activities,
            identity=args.identity,
            max_concurrent_activities=args.max_concurrent_activities,
            max_concurrent_workflow_tasks=args.max_concurrent_workflow_tasks,
            determinism_guard=args.determinism_guard,
            inline_activity_budget=args.inline_activity_budget,
        )
        loop = asyncio.get_running_loop()
        runner = asyncio.create_task(worker.run())
        stops = 0

        def stop() -> None:
            nonlocal stops
            stops += 1
            if stops == 1:
                print("shutting down (again to force)", file=sys.stderr, flush=True)
                worker.shutdown()
            else:
                runner.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        names = ", ".join([*worker.workflow_types, *worker.activity_types])
        print(
            f"worker {worker.identity} polling task queue {args.task_queue!r} on "
            f"{client.address} for: {names}",
            file=sys.stderr,
            flush=True,
        )
        try:
            await runner
        except asyncio.CancelledError:
            return 130
        return 0
