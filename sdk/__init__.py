"""Chronicle's Python SDK (re-exported as ``chronicle``)."""
