"""The inverse-chain store: content-addressed chunks, Merkle block maps, a catalog.

`store` imports nothing of cairn above it: no CLI, no HTTP, no QEMU.
"""
