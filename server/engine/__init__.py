"""The history engine: one transition helper and one module per family of state changes."""
