"""Tools that prove the store (``cairn debug ...``), not used in normal operation."""
