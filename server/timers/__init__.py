"""Durable timers: the loop that fires due timer rows."""
