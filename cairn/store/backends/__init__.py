"""Backend implementations: one module per kind of storage (see `cairn.store.backend`)."""
