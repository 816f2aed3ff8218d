"""Matching: task queues in Postgres, handed to long-polling workers."""
