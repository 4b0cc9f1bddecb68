"""Insights: the files inside a recovery point, read in user space, no mount, no root.

A point (or any disk image) is a `volume.VolumeReader`; `partitions` finds its volumes,
`disk.open_disk` opens the file system on each (ext2/3/4, XFS and NTFS via libyal, FAT via
The Sleuth Kit) behind one `fs.FileSystem` interface, `diff` compares two points using the
store's changed ranges to skip unchanged files, and `extract` restores files safely.
"""
