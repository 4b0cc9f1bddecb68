"""Offsite replication: copying points to a cloud repository, chunk by missing chunk."""
