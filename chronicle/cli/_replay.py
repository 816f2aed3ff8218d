"""``chronicle replay``: replay histories against today's code, from files or from a server.

```
chronicle replay HISTORY.json [HISTORY.json ...] MODULE
chronicle replay MODULE --workflow-id ID [--run-id RUN]
chronicle replay MODULE --query "status = 'running' AND type = 'order'"
```

Each run is reported on one line: ``ok`` (stdout) when it replays cleanly, else its first
divergence (stderr). The exit status is 1 when any run would break, so ``--query`` is a
pre-deploy gate: it lists exactly the running executions today's code would break.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from chronicle.cli._common import CommandError, connect
from chronicle.cli._worker import load_module, module_definitions
from chronicle.history.errors import InvalidHistoryError
from chronicle.sdk.replay import RecordedRun, ReplayResult, replay_from_server, replay_histories
from chronicle.sdk.testing import load_run

__all__ = ["add_parser"]


def add_parser(commands: Any) -> None:
    """Register ``replay``."""
    replay = commands.add_parser(
        "replay",
        help="replay histories (files or live runs) against today's code",
        description="Replay saved histories (written by `chronicle workflow history --json`), "
        "or the histories of runs on the server (--workflow-id, --query), against the "
        "workflows of MODULE. Exits 1 if any run would break, naming each one.",
    )
    replay.add_argument(
        "paths", nargs="+", metavar="[HISTORY.json ...] MODULE", help="history files, then MODULE"
    )
    source = replay.add_mutually_exclusive_group()
    source.add_argument("--workflow-id", default=None, help="replay this workflow's run")
    source.add_argument(
        "--query",
        default=None,
        help="replay every run that matches, e.g. \"status = 'running' AND type = 'order'\"",
    )
    replay.add_argument("--run-id", default=None, help="with --workflow-id: a specific run")
    replay.set_defaults(run=_replay)


def _from_files(paths: list[str]) -> list[RecordedRun]:
    runs: list[RecordedRun] = []
    for path in paths:
        try:
            runs.append(load_run(Path(path)))
        except (OSError, ValueError, KeyError, TypeError, InvalidHistoryError) as exc:
            raise CommandError(f"cannot read the history in {path}: {exc}") from None
    return runs


def _replay(args: argparse.Namespace) -> int:
    *files, module_name = args.paths
    remote = args.workflow_id is not None or args.query is not None
    if remote and files:
        raise CommandError("give history files or --workflow-id/--query, not both", exit_code=2)
    if not remote and not files:
        raise CommandError(
            "nothing to replay: give HISTORY.json files before MODULE, or --workflow-id or --query",
            exit_code=2,
        )
    if args.run_id is not None and args.workflow_id is None:
        raise CommandError("--run-id needs --workflow-id", exit_code=2)
    runs = _from_files(files) if files else []
    workflows, _ = module_definitions(load_module(module_name))
    if not workflows:
        raise CommandError(f"{module_name} defines no @workflow functions")
    results = asyncio.run(_remote(args, workflows)) if remote else replay_histories(runs, workflows)
    return _report(results, module_name, gate=args.query is not None)


async def _remote(args: argparse.Namespace, workflows: list[Any]) -> list[ReplayResult]:
    async with connect(args) as client:
        return await replay_from_server(
            client, workflows, workflow_id=args.workflow_id, run_id=args.run_id, query=args.query
        )


def _report(results: list[ReplayResult], module_name: str, *, gate: bool) -> int:
    for result in results:
        if result.ok:
            print(f"ok: {result}")
        else:
            print(f"error: {result}", file=sys.stderr)
    broken = [r for r in results if not r.ok]
    if gate or len(results) > 1:
        if broken:
            names = ", ".join(f"{r.workflow_id} ({r.run_id})" for r in broken)
            print(
                f"{len(broken)} of {len(results)} runs would break with {module_name}: {names}",
                file=sys.stderr,
            )
        else:
            print(f"all {len(results)} runs replay cleanly against {module_name}")
    return 1 if broken else 0
