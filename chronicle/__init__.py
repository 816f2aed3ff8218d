"""Chronicle: durable-execution workflows for Python.

The SDK surface (API.md) is re-exported here from ``chronicle.sdk``; the server, history layer
and protos are ``chronicle.server``, ``chronicle.history`` and ``chronicle.protos``.
"""

from chronicle.sdk import *  # noqa: F403 -- the SDK's __all__ is the package's public surface
from chronicle.sdk import __all__ as __all__
