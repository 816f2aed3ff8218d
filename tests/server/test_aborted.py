"""A call whose transaction Postgres keeps rolling back (deadlock, serialization failure) is
answered ABORTED with a message saying to retry, not INTERNAL ("internal error")."""

from __future__ import annotations

from typing import Any

import asyncpg
import grpc
import pytest

from chronicle.server.engine import start
from tests.server.conftest import start_request


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
        asyncpg.exceptions.SerializationError("could not serialize access"),
    ],
    ids=["deadlock", "serialization"],
)
async def test_a_transaction_rolled_back_on_every_attempt_is_aborted(
    stub: Any, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    await stub.StartWorkflow(start_request("ab"))
    attempts: list[int] = []

    async def rolled_back(*args: Any, **kwargs: Any) -> Any:
        attempts.append(1)
        raise error

    # the id has a current run: the start takes the locked path (``_start``) in in_transaction
    monkeypatch.setattr(start, "_start", rolled_back)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.StartWorkflow(start_request("ab", id_conflict_policy="use_existing"))
    assert len(attempts) > 1, "in_transaction runs it again first"
    assert raised.value.code() == grpc.StatusCode.ABORTED
    assert "retry the call" in (raised.value.details() or "")
