"""An in-process fake ``WorkflowService``: records requests, answers with scripted handlers.

It tests the SDK's I/O layer (retries, error mapping, pollers, encoding) without the real server.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from chronicle.protos.v1 import service_pb2, service_pb2_grpc

RPCS = [name for name in dir(service_pb2_grpc.WorkflowServiceServicer) if name[0].isupper()]

Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def _response_class(method: str) -> Any:
    return getattr(service_pb2, f"{method}Response")


class FakeService(service_pb2_grpc.WorkflowServiceServicer):
    """Every RPC records its request, then runs ``handlers[name]`` (default: UNIMPLEMENTED;
    polls: take from ``workflow_tasks``/``activity_tasks``, empty after ``poll_wait`` s)."""

    def __init__(self) -> None:
        self.requests: dict[str, list[Any]] = defaultdict(list)
        self.handlers: dict[str, Handler] = {}
        self.activity_tasks: asyncio.Queue[Any] = asyncio.Queue()
        self.workflow_tasks: asyncio.Queue[Any] = asyncio.Queue()
        self.poll_wait = 0.3
        self.events: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        for name in RPCS:
            setattr(self, name, self._make(name))

    def _make(self, name: str) -> Handler:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            self.requests[name].append(request)
            self.events[name].set()
            handler = self.handlers.get(name)
            if handler is not None:
                return await handler(request, context)
            if name in ("PollActivityTask", "PollWorkflowTask"):
                queue = self.activity_tasks if name == "PollActivityTask" else self.workflow_tasks
                try:
                    return await asyncio.wait_for(queue.get(), self.poll_wait)
                except TimeoutError:
                    return _response_class(name)()
            if name in (
                "CompleteActivityTask",
                "FailActivityTask",
                "HeartbeatActivityTask",
                "CompleteWorkflowTask",
                "FailWorkflowTask",
            ):
                return _response_class(name)()
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} is not implemented")
            raise AssertionError("unreachable")

        return call

    async def wait_for(self, name: str, count: int = 1, timeout: float = 10.0) -> list[Any]:
        """Wait until ``name`` was called ``count`` times; its requests."""
        async with asyncio.timeout(timeout):
            while len(self.requests[name]) < count:
                self.events[name].clear()
                await self.events[name].wait()
        return self.requests[name]


async def start_fake(port: int = 0) -> tuple[grpc.aio.Server, FakeService, int]:
    """A running fake server on ``port`` (0: any free port); its service and port."""
    server = grpc.aio.server()
    service = FakeService()
    service_pb2_grpc.add_WorkflowServiceServicer_to_server(  # type: ignore[no-untyped-call]
        service, server
    )
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, service, bound
