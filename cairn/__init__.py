"""cairn: image backup and disaster recovery built on the inverse chain.

Every recovery point is a complete image of its own (a Merkle tree over content-addressed
blocks), so any point can be restored, booted, browsed or deleted without touching another.
"""

__version__ = "0.1.0"
