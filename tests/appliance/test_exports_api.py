"""``/api/v1/exports``: diskless restore through the API, read by real NBD clients over TLS
(nbdcopy with the appliance's certificate, and with the pre-shared key the API hands out)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cairn.agent.client import ApplianceClient
from cairn.errors import ApplianceRefused
from tests.appliance.harness import Appliance, cairn, kill_exports, wait_for
from tests.store.helpers import make_image


def nbdcopy(url: str, out: Path) -> None:
    result = subprocess.run(["nbdcopy", url, str(out)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


def refused(client: ApplianceClient, body: dict[str, Any] | None,
            method: str = "POST", path: str = "/api/v1/exports") -> ApplianceRefused:
    with pytest.raises(ApplianceRefused) as caught:
        client.json(method, path, json=body)
    return caught.value


def closed(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@contextlib.contextmanager
def serving(appliance: Appliance) -> Iterator[ApplianceClient]:
    """The appliance, and every export process it started killed afterwards, even on failure
    (they live in sessions of their own, so stopping the appliance leaves them)."""
    appliance.start()
    try:
        with appliance.admin() as client:
            yield client
    finally:
        kill_exports(appliance.repo)
        appliance.stop()


def test_an_export_through_the_api_serves_the_point_over_tls_until_deleted(
        tmp_path: Path) -> None:
    appliance = Appliance(tmp_path)
    image = tmp_path / "disk.img"
    make_image(image, 2 * 1024 * 1024, seed=5, fill=0.6)
    cairn("backup", "--repo", appliance.repo, "--volume", "v", image)
    with serving(appliance) as client:
        assert refused(client, {"target": "0123456789ab"}).status == 404
        assert refused(client, {"target": "v@latest", "tls": "none"}).status == 422
        assert refused(client, {"target": "v@latest", "writable": True}).status == 400

        cert = client.json("POST", "/api/v1/exports", json={"target": "v@latest"})
        assert cert["state"] == "running" and cert["tls"] == "cert"
        assert cert["url"].startswith("nbds://") and len(cert["export_name"]) >= 24
        taken = refused(client, {"target": "v@latest", "port": cert["port"]})
        assert taken.status == 409 and "in use" in str(taken)
        certs = tmp_path / "certs"
        certs.mkdir()
        (certs / "ca-cert.pem").write_text(appliance.pem)
        nbdcopy(f"{cert['url']}?tls-certificates={certs}", tmp_path / "cert.img")
        assert (tmp_path / "cert.img").read_bytes() == image.read_bytes()

        psk = client.json("POST", "/api/v1/exports", json={"target": "v@latest", "tls": "psk"})
        keys = tmp_path / "keys.psk"
        keys.write_text(client.json("GET", f"/api/v1/exports/{psk['id']}/key")
                        ["psk_file_line"] + "\n")
        nbdcopy(f"{psk['url']}?tls-psk-file={keys}", tmp_path / "psk.img")
        assert (tmp_path / "psk.img").read_bytes() == image.read_bytes()

        listed = {one["id"]: one["state"] for one in client.json("GET", "/api/v1/exports")}
        assert listed == {cert["id"]: "running", psk["id"]: "running"}
        folder = appliance.repo / "exports" / psk["id"]
        scratch = [Path(p) for p in json.loads((folder / "spec.json").read_text())["scratch"]]
        relay_keys = [p / "keys.psk" for one in scratch for p in one.glob("cairn-psk-*")]
        assert len(relay_keys) == 1 and relay_keys[0].is_symlink()  # no copy of the secret
        os.kill(psk["pid"], signal.SIGKILL)
        wait_for(lambda: client.json("GET", f"/api/v1/exports/{psk['id']}")["state"] == "gone")
        assert [p for p in scratch if p.exists()] == []  # what the killed export left
        assert not (folder / "keys.psk").exists()  # a dead export's key opens nothing
        assert refused(client, None, "GET", f"/api/v1/exports/{psk['id']}/key").status == 400

        for one in (cert, psk):
            assert client.json("DELETE", f"/api/v1/exports/{one['id']}")["state"] == "stopped"
            wait_for(lambda one=one: gone(one["pid"]) and closed(one["port"]))
        assert client.json("GET", "/api/v1/exports") == []
        with pytest.raises(ApplianceRefused) as unknown:
            client.json("DELETE", f"/api/v1/exports/{cert['id']}")
        assert unknown.value.status == 404

        down = client.json("POST", "/api/v1/exports", json={"target": "v@latest", "tls": "psk"})
        appliance.stop()
        os.kill(down["pid"], signal.SIGKILL)  # dies while the appliance is down (a reboot)
        wait_for(lambda: gone(down["pid"]))
        folder = appliance.repo / "exports" / down["id"]
        scratch = [Path(p) for p in json.loads((folder / "spec.json").read_text())["scratch"]]
        appliance.start()  # tidies up as it starts, before anyone asks
        assert not (folder / "keys.psk").exists() and [p for p in scratch if p.exists()] == []


def exports(appliance: Appliance, *args: str, check: bool = True) -> Any:
    """`cairn exports ...` as an admin runs it on the appliance host."""
    result = cairn("exports", *args, *appliance.admin_args(), "--json", check=check)
    return json.loads(result.stdout) if result.returncode == 0 else result


def test_a_writable_clone_export_keeps_what_its_client_wrote_and_has_one_writer(
        tmp_path: Path) -> None:
    """`cairn exports` (the API): nbdcopy writes into a clone over TLS with a pre-shared key;
    another user of the clone (an export, a VM, `clone-rm`) is refused naming the writer;
    stopping with --keep-as-point makes the writes a point that restores bit for bit, and
    they stay in the clone (read again through a new export, which keeps writers out)."""
    appliance = Appliance(tmp_path)
    image = tmp_path / "disk.img"
    data = make_image(image, 2 * 1024 * 1024, seed=7, fill=0.6)
    cairn("backup", "--repo", appliance.repo, "--volume", "v", image)
    cairn("clone", "--repo", appliance.repo, "v@latest", "--name", "sandbox")
    changed = bytearray(data)
    changed[4096:4096 + 70000] = b"\x55" * 70000
    (tmp_path / "changed.img").write_bytes(changed)
    with serving(appliance) as client:
        writer = exports(appliance, "start", "sandbox", "--writable", "--tls", "psk")
        assert writer["writable"] and writer["state"] == "running"
        assert exports(appliance, "show", writer["id"])["url"] == writer["url"]
        keys = tmp_path / "keys.psk"
        keys.write_text(exports(appliance, "key", writer["id"])["psk_file_line"] + "\n")
        nbdcopy(str(tmp_path / "changed.img"), f"{writer['url']}?tls-psk-file={keys}")

        second = refused(client, {"target": "sandbox", "writable": True})
        assert second.status == 409
        assert f"clone sandbox is written by a writable export {writer['id']} (pid " \
            f"{writer['pid']}): stop it first (`cairn exports stop {writer['id']}`)" \
            in str(second)
        vm = refused(client, {"source": "sandbox"}, path="/api/v1/vms")
        assert vm.status == 409 and "clone sandbox is written by a writable export" in str(vm)

        assert refused(client, {"target": "sandbox"}).status == 409  # it would read torn
        removal = cairn("clone-rm", "--repo", appliance.repo, "sandbox", check=False)
        assert removal.returncode == 1 and "is written by a writable export" in removal.stderr
        listed = cairn("exports", "list", *appliance.admin_args()).stdout
        assert writer["id"] in listed and "read-write" in listed
        stopped = exports(appliance, "stop", writer["id"], "--keep-as-point")
        assert stopped["state"] == "stopped" and stopped["point"]

        reader = client.json("POST", "/api/v1/exports", json={"target": "sandbox"})
        assert not reader["writable"]
        named = f"clone sandbox is in use by a read-only export {reader['id']} (pid " \
            f"{reader['pid']}), which reads it: stop it first (`cairn exports stop " \
            f"{reader['id']}`)"
        for body, path in (({"source": "sandbox"}, "/api/v1/vms"),
                           ({"target": "sandbox", "writable": True}, "/api/v1/exports")):
            busy = refused(client, body, path=path)  # the reader would see a torn disk
            assert busy.status == 409 and named in str(busy), str(busy)
        removal = cairn("clone-rm", "--repo", appliance.repo, "sandbox", check=False)
        assert removal.returncode == 1 and named in removal.stderr, removal.stderr
        certs = tmp_path / "certs"
        certs.mkdir()
        (certs / "ca-cert.pem").write_text(appliance.pem)
        nbdcopy(f"{reader['url']}?tls-certificates={certs}", tmp_path / "again.img")
        assert (tmp_path / "again.img").read_bytes() == bytes(changed)
        stop = f"/api/v1/exports/{reader['id']}"
        read_only = refused(client, None, "DELETE", stop + "?keep_as_point=true")
        assert read_only.status == 400 and "is read-only" in str(read_only)
        client.json("DELETE", stop)
    out = tmp_path / "kept.img"
    cairn("restore", "--repo", appliance.repo, stopped["point"], out)
    assert out.read_bytes() == bytes(changed)
