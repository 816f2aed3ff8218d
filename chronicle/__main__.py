"""``python -m chronicle``: the ``chronicle`` command line."""

from chronicle.cli import entry

entry()
