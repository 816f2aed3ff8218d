"""`chronicle workflow history`: the readable timeline, `--full`, and `--follow` on a live run."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from pathlib import Path

from chronicle.cli._timeline import HEADER, Timeline, delta_text
from chronicle.history import events as ev
from chronicle.history.payloads import to_payload
from chronicle.sdk.activity import activity
from chronicle.sdk.client import Client
from chronicle.sdk.testing import load_history
from chronicle.sdk.worker import Worker
from chronicle.sdk.workflow import workflow
from chronicle.server.app import Server
from tests.debugging.cli_process import run_cli, start_cli

HISTORIES = Path(__file__).resolve().parents[1] / "histories"


def _lines(name: str, *, full: bool = False) -> dict[str, str]:
    timeline = Timeline(full=full)
    return {e.type + f"#{e.id}": timeline.line(e) for e in load_history(HISTORIES / f"{name}.json")}


def test_answers_name_what_they_answer() -> None:
    lines = _lines("fails_with_activity_error")
    assert 'rejects("declined")  seq=1  @ tests/e2e/workflows.py:' in lines["ActivityScheduled#5"]
    assert "rejects  attempt=1  CardDeclined: rejected: declined" in lines["ActivityFailed#6"]
    assert "WorkflowFailed" in lines["WorkflowFailed#10"]
    assert "ActivityError: activity rejects" in lines["WorkflowFailed#10"]
    timers = _lines("mixed_timer_and_sync_activity")
    assert "duration=0.2s  seq=1" in timers["TimerStarted#10"]
    assert timers["TimerFired#11"].endswith("duration=0.2s")
    assert "sync_double  attempt=1  result=8" in timers["ActivityCompleted#6"]


def test_each_line_shows_id_time_and_time_since_the_previous_event() -> None:
    first, second = load_history(HISTORIES / "add_steps.json")[:2]
    timeline = Timeline()
    assert timeline.line(first).split()[:4] == [
        "1",
        first.time.strftime("%Y-%m-%d"),
        first.time.strftime("%H:%M:%S.%f")[:-3],
        "WorkflowStarted",
    ]
    assert delta_text(second.time - first.time) in timeline.line(second)
    assert HEADER.split() == ["ID", "TIME", "+DELTA", "TYPE", "DETAILS"]


def test_delta_text_scales_its_unit() -> None:
    assert delta_text(None) == ""
    assert delta_text(timedelta(milliseconds=4)) == "+4ms"
    assert delta_text(timedelta(seconds=1.25)) == "+1.25s"
    assert delta_text(timedelta(minutes=3, seconds=4)) == "+3m04s"
    assert delta_text(timedelta(hours=2, minutes=5)) == "+2h05m"
    assert delta_text(timedelta(days=3, hours=4)) == "+3d04h"


def test_long_payloads_are_shortened_unless_full() -> None:
    first = load_history(HISTORIES / "add_steps.json")[0]
    big = ev.Event(
        id=1,
        time=first.time,
        attributes=ev.WorkflowStarted(
            workflow_type="big", task_queue="q", input=(to_payload({"items": list(range(100))}),)
        ),
    )
    short = Timeline().line(big)
    assert "…" in short
    assert "99" not in short
    full = Timeline(full=True).line(big)
    assert "…" not in full
    assert '"items":[0,1,2' in full
    assert "97,98,99]" in full
    assert "workflow_task_timeout=10" in full  # --full shows every attribute


def test_payloads_decode_from_the_url_safe_base64_the_codec_writes() -> None:
    """``"what?"`` and ``">>>"`` encode to base64 with ``_`` and ``-``, which the standard
    decoder silently drops (showing raw base64, or a wrong size)."""
    first = load_history(HISTORIES / "add_steps.json")[0]
    for value, shown in [("what?", '"what?"'), ({"a": ">>>"}, '{"a":">>>"}')]:
        signal = ev.Event(
            id=5,
            time=first.time,
            attributes=ev.SignalReceived(signal_name="s", input=(to_payload(value),)),
        )
        assert f"s({shown})" in Timeline().line(signal)


@activity(start_to_close_timeout=timedelta(seconds=10))
async def stamp(text: str) -> str:
    return f"stamped {text}"


@workflow
async def stamps_after_signal() -> str:
    text = await workflow.wait_signal("go")
    return await stamp(str(text))


async def _line_with(stream: asyncio.StreamReader, needle: str, seen: list[str]) -> str:
    async with asyncio.timeout(30):
        while True:
            raw = await stream.readline()
            assert raw, f"the command ended before printing {needle!r}; it printed {seen}"
            line = raw.decode().rstrip("\n")
            seen.append(line)
            if needle in line:
                return line


async def test_follow_streams_events_of_a_running_workflow_and_exits_when_it_closes(
    server: Server, client: Client
) -> None:
    async with Worker(
        client, task_queue="follow", workflows=[stamps_after_signal], activities=[stamp]
    ):
        handle = await client.start(stamps_after_signal, id="follow-1", task_queue="follow")
        process = await start_cli(
            "--address", f"127.0.0.1:{server.port}", "workflow", "history", "follow-1", "--follow"
        )
        assert process.stdout is not None
        seen: list[str] = []
        try:
            await _line_with(process.stdout, "WorkflowTaskCompleted", seen)
            assert process.returncode is None  # still following: the run is open
            await handle.signal("go", "parcel")
            await _line_with(process.stdout, 'go("parcel")', seen)
            await _line_with(process.stdout, 'stamp("parcel")', seen)
            done = await _line_with(process.stdout, "WorkflowCompleted", seen)
            assert 'result="stamped parcel"' in done
            async with asyncio.timeout(30):
                status = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert status == 0
    assert seen[0].split() == HEADER.split()
    ids = [int(line.split()[0]) for line in seen[1:]]
    assert ids == list(range(1, len(ids) + 1))  # every event once, in order


async def test_history_command_prints_the_timeline(server: Server, client: Client) -> None:
    async with Worker(client, task_queue="tl", workflows=[stamps_after_signal], activities=[stamp]):
        handle = await client.start(stamps_after_signal, id="tl-1", task_queue="tl")
        await handle.signal("go", "x")
        await handle.result()
    status, out, err = await run_cli(
        "--address", f"127.0.0.1:{server.port}", "workflow", "history", "tl-1"
    )
    assert status == 0, err
    assert "ActivityCompleted" in out
    assert 'stamp  attempt=1  result="stamped x"' in out
    status, out, err = await run_cli(
        "--address", f"127.0.0.1:{server.port}", "workflow", "history", "tl-1", "-f", "--json"
    )
    assert status == 1
    assert "--follow" in err


async def test_a_reader_that_goes_away_ends_the_command_quietly(
    server: Server, client: Client
) -> None:
    """``chronicle workflow history ID | head``: no ``error:`` line, SIGPIPE's status."""
    async with Worker(
        client, task_queue="tl-pipe", workflows=[stamps_after_signal], activities=[stamp]
    ):
        handle = await client.start(stamps_after_signal, id="tl-pipe", task_queue="tl-pipe")
        await handle.signal("go", "x")
        await handle.result()
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the command writes a line
    try:
        process = await start_cli(
            "--address", f"127.0.0.1:{server.port}", "workflow", "history", "tl-pipe",
            stdout=write_end,
        )  # fmt: skip
    finally:
        os.close(write_end)
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert err.decode() == ""
    assert process.returncode == 141
