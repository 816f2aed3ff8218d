"""A handle from ``Client.start`` follows its workflow's chain of runs (docs/decisions.md §22):
its calls reach the chain's current run after a continue-as-new, and never a later workflow
that reuses the id once the chain has ended. Real server, real worker."""

from __future__ import annotations

from typing import Any

import pytest

from chronicle import Client, Worker, WorkflowNotFound
from chronicle.history.state import RunStatus
from tests.e2e import chain_workflows as cw
from tests.sdk_io.helpers import eventually, of_type

QUEUE = "chains"


def worker(client: Client) -> Worker:
    """An in-process worker serving the chain workflows."""
    return Worker(client, task_queue=QUEUE, workflows=cw.CHAIN_WORKFLOWS)


async def _running_run(client: Client, workflow_id: str, after: str) -> str:
    """The id's current run once it is running and is not ``after`` (for ``eventually``)."""

    async def moved() -> str | None:
        described = await client.get_handle(workflow_id).describe()
        if described.run_id != after and described.status is RunStatus.RUNNING:
            return described.run_id
        return None

    return await eventually(moved)


async def test_the_start_handle_reaches_the_new_run_after_continue_as_new(client: Client) -> None:
    async with worker(client):
        handle = await client.start(cw.hops, id="chain-follow", task_queue=QUEUE)
        first = handle.run_id
        assert first is not None
        assert handle.first_execution_run_id == first
        await handle.signal("hop")  # run 0 continues as new
        second = await _running_run(client, "chain-follow", after=first)

        assert await handle.query("count") == 1
        described = await handle.describe()
        assert (described.run_id, described.status) == (second, RunStatus.RUNNING)
        assert described.first_run_id == first
        assert await handle.update("add", 5) == 105
        history = await handle.history()
        assert history[0].attributes.continued_from_run_id == first
        assert len(of_type(history, "UpdateAccepted")) == 1

        await handle.signal("hop")  # reaches run 1, which continues as new
        third = await _running_run(client, "chain-follow", after=second)
        assert await handle.query("count") == 2
        await handle.cancel()
        assert await handle.result() == "cancelled in run 2"
    assert handle.run_id == first  # the handle still names the run it started
    assert (await client.get_handle("chain-follow", run_id=third).describe()).run_id == third


async def test_the_start_handle_terminates_the_chains_current_run(client: Client) -> None:
    async with worker(client):
        handle = await client.start(cw.hops, id="chain-terminate", task_queue=QUEUE)
        assert handle.run_id is not None
        await handle.signal("hop")
        second = await _running_run(client, "chain-terminate", after=handle.run_id)
        await handle.terminate("enough")
    described = await client.get_handle("chain-terminate", run_id=second).describe()
    assert described.status is RunStatus.TERMINATED


async def test_a_use_existing_handle_follows_the_existing_runs_chain(client: Client) -> None:
    async with worker(client):
        original = await client.start(cw.hops, id="chain-existing", task_queue=QUEUE)
        assert original.run_id is not None
        await original.signal("hop")
        second = await _running_run(client, "chain-existing", after=original.run_id)
        existing = await client.start(
            cw.hops, id="chain-existing", task_queue=QUEUE, id_conflict_policy="use_existing"
        )
        assert (existing.started, existing.run_id) == (False, second)
        assert existing.first_execution_run_id == original.run_id
        await existing.signal("hop")  # run 1 continues as new
        await _running_run(client, "chain-existing", after=second)
        assert await existing.query("count") == 2
        await existing.signal("finish")
        assert await existing.result() == "finished in run 2"


async def test_a_signal_retried_after_continue_as_new_is_recorded_once(client: Client) -> None:
    """The SDK sends a signal again, with the same request id, when its answer was lost; if the
    run continued as new meanwhile the retry reaches the next run, which must not get it."""
    async with worker(client):
        handle = await client.start(cw.hops, id="chain-retried", task_queue=QUEUE)
        assert handle.run_id is not None
        await handle.signal("hop", request_id="hop-once")  # run 0 continues as new
        second = await _running_run(client, "chain-retried", after=handle.run_id)
        await handle.signal("hop", request_id="hop-once")  # the retry
        pinned = client.get_handle("chain-retried", run_id=second)
        assert not of_type(await pinned.history(), "SignalReceived")
        await handle.signal("finish")
        assert await handle.result() == "finished in run 1"


async def _all_refused(handle: Any) -> list[str]:
    """Every call of ``handle`` but ``result``: each must raise ``WorkflowNotFound``."""
    messages = []
    calls = [
        lambda: handle.signal("hop"),
        lambda: handle.query("count"),
        lambda: handle.update("add", 1),
        lambda: handle.describe(),
        lambda: handle.history(),
        lambda: handle.cancel(),
        lambda: handle.terminate("not this one"),
        lambda: handle.reset(to_last_good=True),
    ]
    for call in calls:
        with pytest.raises(WorkflowNotFound) as caught:
            await call()
        messages.append(str(caught.value))
    return messages


async def test_a_finished_chains_handle_leaves_a_later_workflow_of_its_id_alone(
    client: Client,
) -> None:
    async with worker(client):
        old = await client.start(cw.hops, id="chain-reused", task_queue=QUEUE)
        assert old.run_id is not None
        await old.signal("hop")
        await _running_run(client, "chain-reused", after=old.run_id)
        await old.signal("finish")
        assert await old.result() == "finished in run 1"
        new = await client.start(cw.hops, id="chain-reused", task_queue=QUEUE)
        await eventually(lambda: _has(new, "WorkflowTaskCompleted"))
        before = await new.history()

        messages = await _all_refused(old)
        for message in messages:
            assert "'chain-reused'" in message
            assert old.run_id in message
        assert "has ended" in messages[0]
        assert "names another workflow" in messages[0]

        assert await new.history() == before  # nothing signalled, cancelled or terminated
        assert (await new.describe()).status is RunStatus.RUNNING
        assert await new.query("count") == 0
        await new.signal("finish")
        assert await new.result() == "finished in run 0"
        assert await old.result() == "finished in run 1"  # result() still follows from run 0


async def _has(handle: Any, event_type: str) -> bool | None:
    return True if of_type(await handle.history(), event_type) else None


async def test_get_handle_stays_on_the_current_run_or_the_run_it_names(client: Client) -> None:
    async with worker(client):
        started = await client.start(cw.hops, id="chain-get", task_queue=QUEUE)
        assert started.run_id is not None
        await started.signal("finish")
        await started.result()
        later = await client.start(cw.hops, id="chain-get", task_queue=QUEUE)
        current = client.get_handle("chain-get")
        assert current.first_execution_run_id is None
        assert (await current.describe()).run_id == later.run_id  # any chain's current run
        pinned = client.get_handle("chain-get", run_id=started.run_id)
        assert (await pinned.describe()).status is RunStatus.COMPLETED
        await current.signal("finish")
        assert await later.result() == "finished in run 0"
