"""Chronicle: durable-execution workflows for Python. The SDK surface lives here (API.md)."""
