"""What cairn protects: reading a machine's volumes and knowing what changed."""
