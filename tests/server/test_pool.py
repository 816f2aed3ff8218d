"""The server's connection pool (``server/store/pool.py``) against a real Postgres."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from chronicle.server.store.pool import create_pool


async def test_a_connection_lost_as_its_release_begins_goes_back_without_an_error(
    database_url: str,
) -> None:
    """Postgres drops a borrowed connection just as the ``async with`` ends: asyncpg's
    release has begun (it runs in a task of its own) when the loss closes the connection,
    and the close gives the holder back first. The release must not fail then (asyncpg
    raises ``InternalClientError``: "release() called on a free connection holder"), which
    turned a call cut by a Postgres crash into INTERNAL instead of UNAVAILABLE, and a
    completion that did commit into an error."""
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT 1") == 1
            # Runs after the release has begun and before its task does its first step.
            asyncio.get_running_loop().call_soon(conn.terminate)
        async with pool.acquire() as conn:  # the pool has its one connection back
            assert await conn.fetchval("SELECT 2") == 2
    finally:
        await pool.close()


async def test_an_error_in_the_block_is_not_hidden_by_the_lost_connections_release(
    database_url: str,
) -> None:
    """The block failed because the connection was lost; the release that follows must not
    replace that error (the server maps it to UNAVAILABLE) with its own."""
    pool = await create_pool(database_url, min_size=1, max_size=1)

    async def lose_the_connection() -> None:
        async with pool.acquire() as conn:
            asyncio.get_running_loop().call_soon(conn.terminate)
            raise asyncpg.exceptions.ConnectionDoesNotExistError("lost")

    try:
        with pytest.raises(asyncpg.exceptions.ConnectionDoesNotExistError):
            await lose_the_connection()
    finally:
        await pool.close()
