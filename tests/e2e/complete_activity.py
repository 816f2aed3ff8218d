"""A separate process that completes an activity by its task token (like a webhook would).

python -m tests.e2e.complete_activity ADDRESS TOKEN RESULT
"""

from __future__ import annotations

import asyncio
import sys

from chronicle import Client


async def main(address: str, token: str, result: str) -> None:
    """Heartbeat, then complete the activity named by ``token``."""
    client = await Client.connect(address)
    try:
        await client.heartbeat_activity(token.encode(), "almost")
        await client.complete_activity(token.encode(), result)
    finally:
        await client.close()
    print("completed", flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
