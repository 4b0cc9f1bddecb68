"""``POST /api/v1/rollbacks``: the web console's rollback, the same one `cairn rollback` runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cairn.errors import ApplianceRefused
from tests.appliance.harness import Appliance, cairn
from tests.store.helpers import BLOCK, make_image, mutate

SIZE = 4 * 1024 * 1024


def test_a_rollback_through_the_api_writes_only_what_differs(tmp_path: Path) -> None:
    appliance = Appliance(tmp_path)
    image = tmp_path / "disk.img"
    original = make_image(image, SIZE, seed=11)
    out = cairn("backup", "--repo", appliance.repo, "--volume", "web01", image, "--json")
    point = json.loads(out.stdout)["point"]
    damaged = bytearray(original)
    tracked = mutate(image, damaged, seed=12, writes=3)
    small = tmp_path / "small.img"
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
