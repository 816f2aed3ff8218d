"""``chronicle debug (ID | HISTORY.json) MODULE``: replay a workflow under pdb, task by task.

The history is replayed one workflow task at a time (no task timeout: nothing runs in a
worker), with a cursor on the history. At the ``(chronicle-debug)`` prompt:

```
next | n            replay the next workflow task: the events it saw, the commands the code
                    issued (with their source lines) and the events that recorded them
goto N              replay workflow tasks until event N is replayed
step | s            replay the next task under pdb, stopping at the first line of workflow code
break FILE:LINE     a pdb breakpoint in workflow code (next/goto/cont stop there)
cont | c            replay to the end (or to a breakpoint)
events [N]          the timeline around the cursor (or around event N)
locals              each waiting coroutine's innermost workflow frame and its locals
where               every coroutine and the line it awaits at
quit | q
```

Inside pdb (at a breakpoint or after ``step``), ``cursor`` shows which task and events are being
replayed; ``continue`` finishes the task and returns to the ``(chronicle-debug)`` prompt. SDK,
asyncio and library frames are skipped: ``step``/``next`` in pdb stay in workflow code.
"""

from __future__ import annotations

import argparse
import asyncio
import cmd
import itertools
import pdb
import reprlib
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import IO, Any, cast

from chronicle.cli._common import CommandError, connect
from chronicle.cli._timeline import Timeline
from chronicle.cli._worker import load_module, module_definitions
from chronicle.history import events as ev
from chronicle.history.errors import HistoryError
from chronicle.history.fold import fold
from chronicle.sdk._guards import _is_workflow_code
from chronicle.sdk._info import WorkflowInfo
from chronicle.sdk._instance import WorkflowInstance
from chronicle.sdk.replay import RecordedRun, _find
from chronicle.sdk.testing import load_run

__all__ = ["HistoryDebugger", "add_parser", "task_chunks"]


def task_chunks(events: list[ev.Event]) -> list[list[ev.Event]]:
    """The history cut before each ``WorkflowTaskStarted`` but the first: each chunk holds one
    workflow task with its answer and command-events, so it replays (and is checked) alone."""
    starts = [i for i, e in enumerate(events) if isinstance(e.attributes, ev.WorkflowTaskStarted)]
    cuts = [0, *starts[1:], len(events)]
    return [events[a:b] for a, b in itertools.pairwise(cuts) if b > a]


def _shown(path: str) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return path


class _WorkflowPdb(pdb.Pdb):
    """pdb that stops only in workflow code and can show the history cursor."""

    def __init__(self, owner: HistoryDebugger, stdin: IO[str], stdout: IO[str]) -> None:
        super().__init__(stdin=stdin, stdout=stdout)
        self.owner = owner
        self.prompt = "(Pdb) "

    def stop_here(self, frame: FrameType) -> bool:
        """Never stop in the SDK, asyncio or other libraries."""
        return _is_workflow_code(frame) and super().stop_here(frame)

    def do_cursor(self, arg: str) -> None:
        """cursor: the workflow task being replayed and its events."""
        self.owner.show_cursor()


class HistoryDebugger(cmd.Cmd):
    """The ``(chronicle-debug)`` prompt over one run's history (see the module docstring)."""

    intro = "Replaying workflow history under the debugger; `help` lists the commands."
    prompt = "(chronicle-debug) "

    def __init__(
        self,
        run: RecordedRun,
        workflows: list[Callable[..., Any]],
        *,
        stdin: IO[str] | None = None,
        stdout: IO[str] | None = None,
    ) -> None:
        super().__init__(stdin=stdin, stdout=stdout)
        if stdin is not None:
            self.use_rawinput = False
        self.run = run
        self.events = list(run.events)
        if not self.events:
            raise CommandError("the history is empty: it starts with its WorkflowStarted event")
        try:
            fold(self.events)
        except HistoryError as exc:
            raise CommandError(f"not a valid history: {exc}") from None
        started = cast(ev.WorkflowStarted, self.events[0].attributes)  # the fold checked it
        definition = _find(started.workflow_type, workflows)
        info = WorkflowInfo(
            namespace=run.namespace,
            workflow_id=run.workflow_id,
            run_id=run.run_id,
            workflow_type=definition.name,
            task_queue=started.task_queue,
            attempt=started.attempt,
        )
        self.instance = WorkflowInstance(definition, info)
        self.chunks = task_chunks(self.events)
        self.position = 0
        """Chunks replayed so far."""
        self.timeline = Timeline()
        self.pdb = _WorkflowPdb(self, self.stdin, self.stdout)
        self.failed: BaseException | None = None

    # ------------------------------------------------------------ cursor

    @property
    def cursor(self) -> int:
        """The id of the last replayed event (0 before the first task)."""
        return self.chunks[self.position - 1][-1].id if self.position else 0

    def _say(self, text: str) -> None:
        self.stdout.write(text + "\n")

    def show_cursor(self) -> None:
        """Where the replay is: the task being (or last) replayed and its events."""
        if self.position == 0:
            self._say(f"cursor: before event 1 ({len(self.events)} events)")
            return
        chunk = self.chunks[self.position - 1]
        started = next(
            (e for e in chunk if isinstance(e.attributes, ev.WorkflowTaskStarted)), chunk[0]
        )
        self._say(
            f"cursor: workflow task started at event {started.id} "
            f"(events {chunk[0].id}-{chunk[-1].id} of {len(self.events)})"
        )

    # ------------------------------------------------------------ replaying

    def _advance(self, *, step: bool) -> bool:
        """Replay the next chunk; False at the end or after a failure."""
        if self.failed is not None:
            self._say(f"the replay stopped: {type(self.failed).__name__}: {self.failed}")
            return False
        if self.position >= len(self.chunks):
            self._say("end of history")
            return False
        chunk = self.chunks[self.position]
        self.position += 1
        lines = [f"  {self.timeline.line(e)}" for e in chunk]
        try:
            self._replay(chunk, step=step)
        except Exception as exc:  # a divergence or a task failure is what we came to see
            self.failed = exc
            self._say("\n".join(lines))
            self._say(f"!! {type(exc).__name__}: {exc}")
            return False
        self._say("\n".join(lines))
        return True

    def _replay(self, chunk: list[ev.Event], *, step: bool) -> None:
        debugger = self.pdb
        if step:
            debugger.runcall(self.instance.activate, chunk)
            return
        if not debugger.get_all_breaks():
            self.instance.activate(chunk)
            return
        debugger.reset()
        debugger.botframe = sys._getframe()
        # stop at breakpoints only (bdb's own way of saying so; not in typeshed)
        debugger._set_stopinfo(debugger.botframe, None, -1)  # type: ignore[attr-defined]
        sys.settrace(debugger.trace_dispatch)
        try:
            self.instance.activate(chunk)
        finally:
            sys.settrace(None)

    # ------------------------------------------------------------ commands

    def do_next(self, arg: str) -> None:
        """next: replay the next workflow task and show its events."""
        self._advance(step=False)

    do_n = do_next

    def do_step(self, arg: str) -> None:
        """step: replay the next workflow task under pdb, from its first line of workflow code."""
        self._advance(step=True)

    do_s = do_step

    def do_goto(self, arg: str) -> None:
        """goto N: replay workflow tasks until event N is replayed."""
        try:
            target = int(arg)
        except ValueError:
            self._say(f"goto needs an event id (1-{len(self.events)}), got {arg!r}")
            return
        if not 1 <= target <= len(self.events):
            self._say(f"event {target} does not exist: the history has events 1-{len(self.events)}")
            return
        while self.cursor < target and self._advance(step=False):
            pass

    def do_cont(self, arg: str) -> None:
        """cont: replay to the end of the history (or to a breakpoint)."""
        while self._advance(step=False):
            pass

    do_c = do_cont

    def do_break(self, arg: str) -> None:
        """break FILE:LINE: a breakpoint in workflow code."""
        file, _, line = arg.rpartition(":")
        if not file or not line.isdigit():
            self._say("usage: break FILE:LINE")
            return
        path = str(Path(file).resolve())
        error = self.pdb.set_break(path, int(line))
        self._say(error or f"breakpoint at {_shown(path)}:{line}")

    def do_events(self, arg: str) -> None:
        """events [N]: the timeline around the cursor (or event N); > marks the cursor."""
        center = int(arg) if arg.strip().isdigit() else max(self.cursor, 1)
        timeline = Timeline()
        for event in self.events:
            line = timeline.line(event)
            if abs(event.id - center) <= 5:
                self._say(f"{'>' if event.id == self.cursor else ' '} {line}")

    def do_locals(self, arg: str) -> None:
        """locals: each waiting coroutine's innermost workflow frame and its locals."""
        frames = self.instance.frames()
        if not frames:
            self._say("no workflow coroutine is waiting (not started yet, or finished)")
        short = reprlib.Repr()
        short.maxstring = short.maxother = 80
        for title, frame in frames:
            code = frame.f_code
            self._say(f"{title}: {_shown(code.co_filename)}:{frame.f_lineno} in {code.co_name}")
            for name, value in frame.f_locals.items():
                self._say(f"    {name} = {short.repr(value)}")

    def do_where(self, arg: str) -> None:
        """where: every coroutine and the line of workflow code it awaits at."""
        self._say(self.instance.stack())

    def do_cursor(self, arg: str) -> None:
        """cursor: the workflow task last replayed and its events."""
        self.show_cursor()

    def do_quit(self, arg: str) -> bool:
        """quit: leave the debugger."""
        self.instance.close()
        return True

    do_q = do_quit
    do_EOF = do_quit

    def emptyline(self) -> bool:
        """An empty line does nothing (it does not repeat the last command)."""
        return False


def add_parser(commands: Any) -> None:
    """Register ``debug``."""
    debug = commands.add_parser(
        "debug",
        help="replay a workflow's history under pdb, task by task",
        description="Replay the history of workflow ID (from the server) or of HISTORY.json "
        "against the workflows of MODULE, one workflow task at a time, under pdb.",
    )
    debug.add_argument("source", metavar="ID|HISTORY.json")
    debug.add_argument("module", metavar="MODULE")
    debug.add_argument("--run-id", default=None, help="with an ID: a specific run")
    debug.add_argument(
        "--commands", "-x", default=None, help="run these ;-separated commands, then exit"
    )
    debug.set_defaults(run=_debug)


def _debug(args: argparse.Namespace) -> int:
    if args.source.endswith(".json") or Path(args.source).is_file():
        try:
            run = load_run(Path(args.source))
        except (OSError, ValueError, KeyError, TypeError, HistoryError) as exc:
            raise CommandError(f"cannot read the history in {args.source}: {exc}") from None
    else:
        run = asyncio.run(_fetch(args))
    workflows, _ = module_definitions(load_module(args.module))
    try:
        debugger = HistoryDebugger(run, workflows)
    except LookupError as exc:
        raise CommandError(str(exc)) from None
    if args.commands is not None:
        for line in [c.strip() for c in args.commands.split(";") if c.strip()]:
            print(f"{debugger.prompt}{line}")
            if debugger.onecmd(line):
                break
        return 1 if debugger.failed is not None else 0
    debugger.cmdloop()
    return 0


async def _fetch(args: argparse.Namespace) -> RecordedRun:
    async with connect(args) as client:
        handle = client.get_handle(args.source, run_id=args.run_id)
        events = await handle.history()
        run_id = args.run_id or (await handle.describe()).run_id
    return RecordedRun(events, args.source, run_id, args.namespace)
