"""Debugging tests reuse the SDK I/O fixtures: a real in-process server on a fresh database."""

from tests.sdk_io.conftest import client, server

__all__ = ["client", "server"]
