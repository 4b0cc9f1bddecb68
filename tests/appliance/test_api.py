"""The API's walls: tokens scoped to one machine (403), bad requests answered 4xx, never 500."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from cairn.errors import ApplianceRefused, CertificateMismatch
from tests.appliance.harness import Agent, Appliance, cairn


def status(call: Callable[[], object]) -> int:
    with pytest.raises(ApplianceRefused) as err:
        call()
    return err.value.status


def test_agent_token_reaches_only_its_own_machine(appliance: Appliance,
                                                  make_agent: Callable[..., Agent],
                                                  tmp_path: Path) -> None:
    a, b = make_agent("alpha"), make_agent("beta")
    disk = tmp_path / "b.img"
    disk.write_bytes(b"x" * 65536)
    b.protect("sda", disk)
    with appliance.client(b.token) as cb:
        upload = cb.json("POST", "/api/v1/agent/uploads", json={"volume": "sda", "size": 65536})
    with appliance.client(a.token) as ca:
        assert ca.json("GET", "/api/v1/machines/alpha")["name"] == "alpha"
        assert status(lambda: ca.json("GET", "/api/v1/machines/beta/volumes")) == 403
        assert status(lambda: ca.json("GET", "/api/v1/machines/beta/points")) == 403
        body = struct.pack(">QI", 0, 4) + b"evil"
        assert status(lambda: ca.request("PUT", f"/api/v1/agent/uploads/{upload['upload']}/data",
                                         content=body)) == 403
        assert status(lambda: ca.json("POST",
                                      f"/api/v1/agent/uploads/{upload['upload']}/commit",
                                      json={"ranges": [[0, 4]]})) == 403
        assert status(lambda: ca.json("GET", "/api/v1/machines")) == 403
        assert status(lambda: ca.json("POST", "/api/v1/machines/beta/jobs", json={})) == 403
    with appliance.client("agent_forged-token-value") as forged:
        assert status(lambda: forged.json("POST", "/api/v1/agent/jobs/next")) == 401


def test_pairing_token_works_once(appliance: Appliance, tmp_path: Path) -> None:
    with appliance.admin() as c:
        token = c.json("POST", "/api/v1/machines", json={"name": "once"})["pairing_token"]
    with appliance.client(None) as c:
        assert c.json("POST", "/api/v1/pair", json={"token": token})["machine"] == "once"
        assert status(lambda: c.json("POST", "/api/v1/pair", json={"token": token})) == 403


def test_malformed_requests_get_4xx(appliance: Appliance, make_agent: Callable[..., Agent],
                                    tmp_path: Path) -> None:
    agent = make_agent("m1")
    disk = tmp_path / "d.img"
    disk.write_bytes(bytes(131072))
    agent.protect("sda", disk)
    with appliance.client(agent.token) as c, appliance.admin() as admin:
        upload = c.json("POST", "/api/v1/agent/uploads",
                        json={"volume": "sda", "size": 131072})["upload"]
        data = f"/api/v1/agent/uploads/{upload}/data"
        cases = {
            "bad json": lambda: c.request("POST", "/api/v1/agent/uploads", content=b"{nope",
                                          headers={"Content-Type": "application/json"}),
            "negative size": lambda: c.json("POST", "/api/v1/agent/uploads",
                                            json={"volume": "sda", "size": -1}),
            "bad volume name": lambda: c.json("POST", "/api/v1/agent/uploads",
                                              json={"volume": "../etc", "size": 10}),
            "unprotected volume": lambda: c.json("POST", "/api/v1/agent/uploads",
                                                 json={"volume": "sdz", "size": 10}),
            "frame past end": lambda: c.request("PUT", data, content=struct.pack(
                ">QI", 131070, 4) + b"abcd"),
            "truncated frame": lambda: c.request("PUT", data, content=struct.pack(
                ">QI", 0, 100) + b"abcd"),
            "short header": lambda: c.request("PUT", data, content=b"\x00\x01"),
            "empty body": lambda: c.request("PUT", data, content=b""),
            "unknown upload": lambda: c.request("PUT", "/api/v1/agent/uploads/zz/data",
                                                content=struct.pack(">QI", 0, 1) + b"a"),
            "commit before data": lambda: c.json("POST", f"/api/v1/agent/uploads/{upload}/commit",
                                                 json={"ranges": [[0, 65536]], "full": True}),
            "commit range outside": lambda: c.json(
                "POST", f"/api/v1/agent/uploads/{upload}/commit",
                json={"ranges": [[131072, 5]], "full": True}),
            "incremental first": lambda: c.json("POST", f"/api/v1/agent/uploads/{upload}/commit",
                                                json={"ranges": [], "full": False}),
            "no token": lambda: appliance.client(None).json("GET", "/api/v1/machines"),
            "bad machine name": lambda: admin.json("POST", "/api/v1/machines",
                                                   json={"name": "a b/c"}),
            "unknown machine": lambda: admin.json("GET", "/api/v1/machines/nope"),
            "schedule too tight": lambda: admin.json("PUT", "/api/v1/machines/m1/schedule",
                                                     json={"every": "0.1s"}),
            "schedule bad unit": lambda: admin.json("PUT", "/api/v1/machines/m1/schedule",
                                                    json={"every": "5 parsecs"}),
            "schedule bad cron": lambda: admin.json("PUT", "/api/v1/machines/m1/schedule",
                                                    json={"cron": "61 * * * *"}),
            "schedule both": lambda: admin.json("PUT", "/api/v1/machines/m1/schedule",
                                                json={"every": "5m", "cron": "* * * * *"}),
            "bad retention": lambda: admin.json("PUT", "/api/v1/machines/m1/schedule",
                                                json={"every": "5m", "retention": "forever=1"}),
            "job id not a number": lambda: admin.json("GET", "/api/v1/jobs/abc"),
            "bad limit": lambda: admin.json("GET", "/api/v1/jobs", params={"limit": 0}),
        }
        for name, call in cases.items():
            code = status(call)
            assert 400 <= code < 500, (name, code)
    assert "Traceback" not in appliance.log.read_text()


def test_wrong_certificate_is_refused(appliance: Appliance, tmp_path: Path) -> None:
    wrong = "sha256:" + "0" * 64
    result = cairn("machines", "--appliance", appliance.url, "--fingerprint", wrong,
                   env={"CAIRN_ADMIN_TOKEN": "x"}, check=False)
    assert result.returncode == 1
    assert "not the expected" in result.stderr and "Traceback" not in result.stderr
    with pytest.raises(CertificateMismatch):
        c = appliance.client(None)
        c.fingerprint = wrong
        c.json("GET", "/healthz")


def test_openapi_document_lists_the_api(appliance: Appliance) -> None:
    with appliance.client(None) as c:
        spec = c.json("GET", "/openapi.json")
    paths = spec["paths"]
    for path in ("/api/v1/machines", "/api/v1/jobs", "/api/v1/schedules",
                 "/api/v1/machines/{name}/points", "/api/v1/agent/uploads/{upload_id}/data",
                 "/metrics"):
        assert path in paths
