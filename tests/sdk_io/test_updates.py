"""Updates end to end: a real server, real workers over gRPC, on a fresh database."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from chronicle.sdk._grpc import RPCError
from chronicle.sdk.activity import activity
from chronicle.sdk.client import Client
from chronicle.sdk.errors import ApplicationError, ServerFailure, WorkflowNotFound
from chronicle.sdk.replay import replay
from chronicle.sdk.worker import Worker
from chronicle.sdk.workflow import workflow
from chronicle.server.app import Server
from chronicle.server.engine import query
from tests.sdk_io.helpers import of_type, server_config


@activity(start_to_close_timeout=timedelta(seconds=10))
async def price_of(item: str) -> int:
    return len(item) * 100


@workflow
async def cart(owner: str) -> dict[str, object]:
    items: list[str] = []
    total = [0]
    done = [False]

    async def add(item: str) -> int:
        total[0] += await price_of(item)
        items.append(item)
        return len(items)

    def not_empty(item: str) -> None:
        if not item:
            raise ApplicationError("an item needs a name", type="EmptyItem")
        if item in items:
            raise ApplicationError(f"{item!r} is already in the cart", type="Duplicate")

    def checkout() -> int:
        done[0] = True
        return total[0]

    def refuse(reason: str) -> None:
        raise ApplicationError(f"refused: {reason}", type="Refused")

    workflow.on_update("add", add, validator=not_empty)
    workflow.on_update("checkout", checkout)
    workflow.on_update("refuse", refuse)
    workflow.on_query("items", lambda: list(items))
    workflow.on_query("total", lambda: total[0])
    await workflow.wait_condition(lambda: done[0])
    return {"owner": owner, "items": items, "total": total[0]}


def _worker(client: Client, queue: str) -> Worker:
    return Worker(client, task_queue=queue, workflows=[cart], activities=[price_of])


async def test_update_runs_the_handler_and_the_workflow_sees_its_changes(client: Client) -> None:
    async with _worker(client, "upd-1"):
        handle = await client.start(cart, "ada", id="cart-1", task_queue="upd-1")
        # Sent at once: the first workflow task may not have run yet.
        assert await handle.update("add", "apple") == 1
        assert await handle.update("add", "kiwi") == 2
        assert await handle.query("items") == ["apple", "kiwi"]
        assert await handle.update("checkout") == 900
        result = await handle.result()
    assert result == {"owner": "ada", "items": ["apple", "kiwi"], "total": 900}
    history = await handle.history()
    accepted = of_type(history, "UpdateAccepted")
    completed = of_type(history, "UpdateCompleted")
    assert [a.update_name for a in accepted] == ["add", "add", "checkout"]
    assert [c.update_id for c in completed] == [a.update_id for a in accepted]
    events = {e.id: e.type for e in history}
    assert all(events[c.accepted_event_id] == "UpdateAccepted" for c in completed)
    # A fresh worker replays the history without a nondeterminism error.
    replay(history, [cart])


async def test_an_update_outcome_arrives_when_it_is_recorded(client: Client) -> None:
    """The outcome's long poll marks the run watched and wakes on the completion that records
    it, long before the SDK's 20 s poll would end and ask again (docs/decisions.md §11)."""
    async with _worker(client, "upd-wake"):
        handle = await client.start(cart, "eve", id="cart-wake", task_queue="upd-wake")
        assert await handle.update("add", "plum") == 1
        # The handler awaits an activity: its outcome is recorded after the poll began waiting.
        assert await asyncio.wait_for(handle.update("add", "fig"), 10) == 2
        assert await asyncio.wait_for(handle.update("checkout"), 10) == 700


async def test_rejections_raise_in_the_caller_and_write_nothing(client: Client) -> None:
    async with _worker(client, "upd-2"):
        handle = await client.start(cart, "bob", id="cart-2", task_queue="upd-2")
        assert await handle.update("add", "pear") == 1
        before = await handle.history()
        with pytest.raises(ApplicationError, match="'pear' is already in the cart") as info:
            await handle.update("add", "pear")
        assert info.value.type == "Duplicate"
        with pytest.raises(ApplicationError, match="an item needs a name"):
            await handle.update("add", "")
        with pytest.raises(
            ApplicationError, match=r"unknown update 'remove' \(registered: add, checkout, refuse\)"
        ) as info:
            await handle.update("remove", "pear")
        assert info.value.type == "UpdateNotFound"
        with pytest.raises(ApplicationError, match="update 'add' got 2 argument") as info:
            await handle.update("add", "a", "b")
        assert info.value.type == "InvalidArguments"
        with pytest.raises(ApplicationError, match=r"update 'add'.*str") as info:
            await handle.update("add", {"not": "a string"})
        assert info.value.type == "InvalidArguments"
        with pytest.raises(ApplicationError, match="unknown query 'nope' \\(registered: items"):
            await handle.query("nope")
        with pytest.raises(ApplicationError, match="query 'items' got 1 argument"):
            await handle.query("items", 1)
        assert await handle.history() == before
        await handle.update("checkout")
        await handle.result()


async def test_a_handler_error_fails_the_update_not_the_workflow(client: Client) -> None:
    async with _worker(client, "upd-3"):
        handle = await client.start(cart, "cy", id="cart-3", task_queue="upd-3")
        with pytest.raises(ApplicationError, match="refused: no") as info:
            await handle.update("refuse", "no")
        assert info.value.type == "Refused"
        assert await handle.update("add", "fig") == 1
        assert await handle.update("checkout") == 300
        assert (await handle.result())["items"] == ["fig"]
        [completed, *_] = of_type(await handle.history(), "UpdateCompleted")
        assert completed.failure is not None
        assert completed.failure.message == "refused: no"


async def test_the_same_update_id_gives_the_same_outcome_and_is_recorded_once(
    client: Client,
) -> None:
    async with _worker(client, "upd-4"):
        handle = await client.start(cart, "di", id="cart-4", task_queue="upd-4")
        first, second = await asyncio.gather(
            handle.update("add", "plum", update_id="u-1"),
            handle.update("add", "plum", update_id="u-1"),
        )
        assert first == second == 1
        # After completion, even with other arguments: the recorded outcome, nothing new.
        assert await handle.update("add", "other", update_id="u-1") == 1
        with pytest.raises(ApplicationError, match="refused: x"):
            await handle.update("refuse", "x", update_id="u-2")
        with pytest.raises(ApplicationError, match="refused: x"):
            await handle.update("refuse", "x", update_id="u-2")
        assert await handle.query("items") == ["plum"]
        history = await handle.history()
        assert [a.update_id for a in of_type(history, "UpdateAccepted")] == ["u-1", "u-2"]
        assert len(of_type(history, "UpdateCompleted")) == 2
        await handle.update("checkout")
        await handle.result()


async def test_queries_work_on_a_closed_workflow_and_write_nothing(client: Client) -> None:
    async with _worker(client, "upd-5"):
        handle = await client.start(cart, "eve", id="cart-5", task_queue="upd-5")
        await handle.update("add", "lime")
        await handle.update("checkout")
        await handle.result()
        history = await handle.history()
        # The worker dropped the closed run from its cache: it answers by replaying.
        assert await handle.query("items") == ["lime"]
        assert await handle.query("total") == 400
        assert await handle.history() == history
        with pytest.raises(WorkflowNotFound, match="already closed"):
            await handle.update("add", "late")
        assert await handle.history() == history


@workflow
async def forgetful() -> str:
    finish = [False]

    async def slow() -> str:
        await workflow.sleep(timedelta(seconds=30))
        return "never"

    def stop() -> None:
        finish[0] = True

    workflow.on_update("slow", slow)
    workflow.on_update("stop", stop)
    await workflow.wait_condition(lambda: finish[0])
    return "closed"


async def test_a_run_closing_before_the_handler_ends_fails_the_update(client: Client) -> None:
    async with Worker(client, task_queue="upd-6", workflows=[forgetful]):
        handle = await client.start(forgetful, id="forget-1", task_queue="upd-6")
        slow = asyncio.ensure_future(handle.update("slow"))
        for _ in range(200):
            if of_type(await handle.history(), "TimerStarted"):
                break
            await asyncio.sleep(0.05)
        await handle.update("stop")
        assert await handle.result() == "closed"
        with pytest.raises(ServerFailure, match="closed \\(completed\\) before update"):
            await slow


async def _run_cli(server: Server, *argv: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chronicle",
        "--address",
        f"127.0.0.1:{server.port}",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cli_update_and_query_print_json_and_errors_are_one_line(
    server: Server, client: Client
) -> None:
    async with _worker(client, "upd-cli"):
        await client.start(cart, "cli", id="cart-cli", task_queue="upd-cli")
        code, out, err = await _run_cli(
            server, "workflow", "update", "cart-cli", "add", "--input", '"melon"'
        )
        assert (code, out.strip()) == (0, "1"), err
        code, out, err = await _run_cli(server, "workflow", "query", "cart-cli", "items")
        assert (code, out.strip()) == (0, '["melon"]'), err
        code, out, err = await _run_cli(
            server, "workflow", "update", "cart-cli", "add", "--input", '"melon"'
        )
        assert code == 1
        assert err.strip().splitlines() == ["error: 'melon' is already in the cart"]
        code, out, err = await _run_cli(server, "workflow", "query", "cart-cli", "nope")
        assert code == 1
        assert err.strip().splitlines() == [
            "error: unknown query 'nope' (registered: items, total)"
        ]


@pytest.fixture
async def impatient_server(database_url: str) -> AsyncIterator[Server]:
    """A server that gives up on a query or update no worker takes after 0.3 s."""
    config = server_config(database_url).model_copy(update={"query_pickup_timeout": 0.3})
    instance = Server(config)
    await instance.start()
    try:
        yield instance
    finally:
        await instance.stop(grace=0)


async def test_without_a_polling_worker_queries_and_updates_fail_fast(
    impatient_server: Server,
) -> None:
    client = await Client.connect(f"127.0.0.1:{impatient_server.port}")
    try:
        handle = await client.start(cart, "nobody", id="cart-idle", task_queue="idle-queue")
        before = await handle.history()
        for call in (handle.query("items"), handle.update("add", "x")):
            with pytest.raises(
                RPCError, match="no worker is polling task queue 'idle-queue'"
            ) as info:
                await call
            assert info.value.code == "FAILED_PRECONDITION"
        assert await handle.history() == before
    finally:
        await client.close()


async def test_a_call_validated_after_its_twin_was_accepted_returns_the_twins_outcome(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two calls with one update id: the second is validated and accepted first; the first's
    validation then sees the item already added and rejects it. Its answer must be the id's
    recorded outcome, not that rejection."""
    real_ask = query.ask_worker
    first_waits = asyncio.Event()
    second_done = asyncio.Event()

    async def first_validates_late(*args: Any, **kwargs: Any) -> Any:
        if not first_waits.is_set():
            first_waits.set()
            await second_done.wait()
        return await real_ask(*args, **kwargs)

    monkeypatch.setattr(query, "ask_worker", first_validates_late)
    async with _worker(client, "upd-twins"):
        handle = await client.start(cart, "tw", id="cart-twins", task_queue="upd-twins")
        first = asyncio.ensure_future(handle.update("add", "apple", update_id="twin"))
        await first_waits.wait()
        assert await handle.update("add", "apple", update_id="twin") == 1
        second_done.set()
        assert await asyncio.wait_for(first, 15) == 1
        assert len(of_type(await handle.history(), "UpdateAccepted")) == 1
        await handle.update("checkout")
        await handle.result()


@workflow
async def sneaky_validator() -> str:
    done = [False]

    def finish() -> None:
        done[0] = True

    async def smuggle(item: str) -> None:
        await price_of(item)

    def validate_finish() -> None:
        # Work scheduled on the workflow's loop (it would schedule an activity when it runs)
        # and a command issued at once, then a rejection: neither may reach the history.
        asyncio.ensure_future(smuggle("later"))  # noqa: RUF006 - never to run: under test
        price_of("now").close()  # the command is issued at the call
        raise ApplicationError("not yet", type="NotYet")

    def peek() -> str:
        asyncio.ensure_future(smuggle("peeked"))  # noqa: RUF006 - never to run: under test
        return "ok"

    workflow.on_update("finish", finish, validator=validate_finish)
    workflow.on_query("peek", peek)
    await workflow.wait_condition(lambda: done[0])
    return "done"


async def test_work_a_validator_or_query_schedules_never_runs(client: Client) -> None:
    """Validators and queries are read-only: tasks they create on the workflow's loop are
    dropped, so nothing they started is recorded and the history replays."""
    async with Worker(
        client, task_queue="upd-ro", workflows=[sneaky_validator], activities=[price_of]
    ):
        handle = await client.start(sneaky_validator, id="sneaky", task_queue="upd-ro")
        with pytest.raises(ApplicationError, match="not yet"):
            await handle.update("finish")
        assert await handle.query("peek") == "ok"
        await handle.signal("nudge")  # a workflow task: anything left scheduled would run now
        await asyncio.sleep(0.5)
        history = await handle.history()
        assert of_type(history, "ActivityScheduled") == []
    replay(history, [sneaky_validator])
