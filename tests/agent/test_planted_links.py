"""Files the agent (root) creates beside user data never follow a planted symlink."""

from __future__ import annotations

import contextlib
from pathlib import Path

from cairn.sources import extents


def test_snapshot_over_a_planted_symlink_leaves_its_target_alone(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"volume data" * 1000)
    victim = tmp_path / "shadow"
    victim.write_bytes(b"a file the attacker wants truncated")
    planted = tmp_path / "disk.img.cairn-snapshot.new"
    planted.symlink_to(victim)
    with contextlib.suppress(extents.NoReflink):
        extents.clone(image, planted)
    assert victim.read_bytes() == b"a file the attacker wants truncated"
    assert not planted.is_symlink()
