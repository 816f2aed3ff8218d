"""SDK core tests: pure, no server (hand-built histories drive WorkflowInstance)."""
