"""Instant virtualization: block devices over points and clones, NBD export, QEMU."""
