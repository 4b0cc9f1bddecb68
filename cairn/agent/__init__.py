"""The agent: runs on a protected machine, takes jobs from its appliance, sends changes.

It keeps a TOML config (appliance URL, pinned certificate, token, protected volumes) and,
per volume, a baseline that says what the appliance's latest point holds: a reflink
snapshot (FIEMAP tracking) or a list of block hashes (full-scan tracking).
"""
