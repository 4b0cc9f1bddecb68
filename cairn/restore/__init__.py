"""Getting a point back out: raw images (sparse), block devices, and other formats."""
