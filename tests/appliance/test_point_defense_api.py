"""Locks, held deletes and undelete over the REST API: the admin's, never an agent's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.appliance.harness import Agent, Appliance
from tests.appliance.test_api import status


def test_lock_delete_undelete_and_delete_now_by_api(appliance: Appliance,
                                                    make_agent: Callable[..., Agent],
                                                    tmp_path: Path) -> None:
    agent = make_agent("web01")
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(range(256)) * 4096)
    agent.protect("sda", disk)
    [first] = agent.backup()["points"]
    with disk.open("r+b") as f:
        f.write(b"\x01" * 65536)
    [second] = agent.backup()["points"]

    def listed() -> list[str]:
        return [p["id"] for p in admin.json("GET", "/api/v1/machines/web01/points")]

    with appliance.admin() as admin, appliance.client(agent.token) as own:
        # A compromised agent can neither delete its backups nor touch their locks.
        assert status(lambda: own.json("DELETE", f"/api/v1/points/{second}",
                                       params={"now": "true"})) == 403
        assert status(lambda: own.json("POST", f"/api/v1/points/{second}/lock",
                                       json={"until": "1d"})) == 403
        assert status(lambda: own.json("GET", "/api/v1/points/deleted")) == 403

        locked = admin.json("POST", f"/api/v1/points/{first}/lock",
                            json={"until": "2099-06-30"})
        assert locked["locked"] == [first]
        by_id = {p["id"]: p for p in admin.json("GET", "/api/v1/machines/web01/points")}
        assert by_id[first]["locked_until"] == locked["locked_until"]
        assert by_id[second]["locked_until"] is None and by_id[second]["flagged"] is False
        for now in ("false", "true"):
            assert status(lambda n=now: admin.json("DELETE", f"/api/v1/points/{first}",
                                                   params={"now": n})) == 409
        assert status(lambda: admin.json("POST", f"/api/v1/points/{first}/unlock")) == 409
        assert status(lambda: admin.json("POST", f"/api/v1/points/{first}/lock",
                                         json={"until": "2098-01-01"})) == 409
        assert status(lambda: admin.json("POST", f"/api/v1/points/{first}/lock",
                                         json={"until": "someday"})) == 400
        assert status(lambda: admin.json("POST", "/api/v1/points/ffffffffffff/undelete")) == 404

        held = admin.json("DELETE", f"/api/v1/points/{second}")
        assert held["deleted"] == [second] and held["held_until"] is not None
        assert listed() == [first]
        assert [p["id"] for p in admin.json("GET", "/api/v1/points/deleted")] == [second]
        assert admin.json("POST", f"/api/v1/points/{second}/undelete") == {
            "undeleted": [second]}
        assert listed() == [first, second]

        gone = admin.json("DELETE", f"/api/v1/points/{second}", params={"now": "true"})
        assert gone["held_until"] is None and gone["freed_chunks"] > 0
        assert listed() == [first] and admin.json("GET", "/api/v1/points/deleted") == []
