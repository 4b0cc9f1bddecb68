"""The REST API's JSON gives every Unix time also as ``<field>_iso``, as the CLI does
(issue 15: one time format in JSON)."""

from __future__ import annotations

from datetime import datetime

from cairn.appliance import tokens
from tests.web.conftest import Site


def test_points_carry_iso_times_beside_unix_ones(site: Site) -> None:
    tokens.start(site.repo, site.state)
    web01 = site.state.machine("web01")
    assert web01 is not None
    site.state.register_volume(web01.id, "sda", site.image_a.stat().st_size)
    token = (site.repo / "admin-token").read_text().strip()
    answer = site.client.get("/api/v1/machines/web01/points",
                             headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    points = answer.json()
    assert len(points) == 2
    for point in points:
        iso = datetime.fromisoformat(point["created_iso"])
        assert iso.tzinfo is not None
        assert abs(iso.timestamp() - point["created"]) < 1
