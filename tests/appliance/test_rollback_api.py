"""``POST /api/v1/rollbacks``: the web console's rollback, the same one `cairn rollback` runs,
confined to unmounted disks and image files in ``[rollback] image_dirs``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cairn.errors import ApplianceRefused
from tests.appliance.harness import Appliance, cairn
from tests.store.helpers import BLOCK, make_image, mutate

SIZE = 4 * 1024 * 1024


def confined(tmp_path: Path) -> tuple[Appliance, Path]:
    """An appliance whose REST rollbacks may write image files in ``tmp_path/images``."""
    appliance = Appliance(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    with appliance.config.open("a") as config:
        config.write(f"[rollback]\nimage_dirs = [\"{images}\"]\n")
    return appliance, images


def test_a_rollback_through_the_api_writes_only_what_differs(tmp_path: Path) -> None:
    appliance, images = confined(tmp_path)
    image = images / "disk.img"
    original = make_image(image, SIZE, seed=11)
    out = cairn("backup", "--repo", appliance.repo, "--volume", "web01", image, "--json")
    point = json.loads(out.stdout)["point"]
    damaged = bytearray(original)
    tracked = mutate(image, damaged, seed=12, writes=3)
    small = images / "small.img"
    small.write_bytes(bytes(SIZE // 2))
    appliance.start()
    try:
        with appliance.admin() as client:
            with pytest.raises(ApplianceRefused, match="at least") as refused:
                client.json("POST", "/api/v1/rollbacks", json={"point": point,
                                                                "target": str(small)})
            assert refused.value.status == 400
            with pytest.raises(ApplianceRefused, match="outside the target") as refused:
                client.json("POST", "/api/v1/rollbacks", json={
                    "point": point, "target": str(image), "changed_ranges": [[SIZE, 1]]})
            assert refused.value.status == 400
            assert image.read_bytes() == damaged and small.read_bytes() == bytes(SIZE // 2)

            done = client.json("POST", "/api/v1/rollbacks", json={
                "point": "web01@latest", "target": str(image), "changed_ranges": tracked})
    finally:
        appliance.stop()
    assert image.read_bytes() == original
    differing = sum(original[o:o + BLOCK] != damaged[o:o + BLOCK] for o in range(0, SIZE, BLOCK))
    assert done["point"] == point and done["bytes_written"] == differing * BLOCK
    assert done["bytes_read"] < SIZE  # only the tracked ranges were compared


def test_the_api_refuses_targets_outside_image_dirs_and_the_repository(tmp_path: Path) -> None:
    appliance, images = confined(tmp_path)
    image = images / "disk.img"
    make_image(image, SIZE, seed=21)
    point = json.loads(cairn("backup", "--repo", appliance.repo, "--volume", "web01", image,
                             "--json").stdout)["point"]
    passwd = tmp_path / "etc" / "passwd"  # a host file the size of the point
    passwd.parent.mkdir()
    passwd.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n" * (SIZE // 32))
    repo_file = max((p for p in appliance.repo.rglob("*") if p.is_file()),
                    key=lambda p: p.stat().st_size)
    (images / "to-passwd").symlink_to(passwd)
    (images / "to-repo").symlink_to(repo_file)
    os.link(passwd, images / "linked")
    refusals = {passwd: "outside \\[rollback\\] image_dirs",
                images / "to-passwd": "outside \\[rollback\\] image_dirs",
                images / "linked": "other hard link",
                images / "to-repo": "inside the repository",
                repo_file: "inside the repository"}
    before = {p: p.read_bytes() for p in (passwd, repo_file)}
    appliance.start()
    try:
        with appliance.admin() as client:
            for target, reason in refusals.items():
                with pytest.raises(ApplianceRefused, match=reason) as refused:
                    client.json("POST", "/api/v1/rollbacks",
                                json={"point": point, "target": str(target)})
                assert refused.value.status == 400
                assert "\n" not in str(refused.value)
    finally:
        appliance.stop()
    assert {p: p.read_bytes() for p in before} == before
