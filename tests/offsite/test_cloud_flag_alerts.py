"""A point backed up straight into a cloud repository and flagged as ransomware raises the
same alert as one made on the appliance: the appliance finds the flag in the bucket it
replicates to and alerts through its channels (a real webhook listener here), once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.alerts.receivers import WebhookListener
from tests.appliance.harness import Agent, Appliance, cairn, wait_for
from tests.insights.images import loop_mounted, make_ext4
from tests.insights.test_ransomware import build_tree, ransomware
from tests.offsite.conftest import s3_env
from tests.s3server import SeaweedS3


def test_a_flagged_cloud_direct_point_alerts_through_the_appliance(
        cloud_appliance: Appliance, web01: Agent, cloud_url: str, s3_server: SeaweedS3,
        tmp_path: Path) -> None:
    app, agent = cloud_appliance, web01
    agent.backup()
    with WebhookListener() as hook:
        cairn("alerts", *app.admin_args(), "set", "--webhook", hook.url)
        cairn("offsite", *app.admin_args(), "set", "web01", "--to", cloud_url)
        cairn("offsite", *app.admin_args(), "run", "web01", "--wait", timeout=300)

        # Another host backs a server up straight into the same bucket; it gets encrypted.
        tree = tmp_path / "tree"
        build_tree(tree)
        image = make_ext4(tree, tmp_path / "srv.img", 64 * 1024 * 1024)
        shutil.rmtree(tree)
        key = ["--key-file", str(app.repo / "key")] if (app.repo / "key").exists() else []
        env = s3_env(s3_server, tmp_path)
        cairn("backup", "--repo", cloud_url, *key, "--volume", "srv-sda", image, env=env)
        with loop_mounted(image, tmp_path / "mnt"):
            ransomware(tmp_path / "mnt")
        made = json.loads(cairn("backup", "--repo", cloud_url, *key, "--volume", "srv-sda",
                                image, "--json", env=env).stdout)
        assert made["flagged"] is True

        for _ in range(2):  # the next offsite runs find it; it is told once
            cairn("offsite", *app.admin_args(), "run", "web01", "--wait", timeout=300)
        [sent] = wait_for(lambda: hook.of("ransomware"), timeout=30)
        assert sent["subject"] == made["point"] and sent["severity"] == "critical"
        assert "looks like ransomware" in sent["message"] and cloud_url in sent["message"]
        assert "HOW_TO_DECRYPT.txt" in sent["message"]
        listed = json.loads(cairn("alerts", *app.admin_args(), "--json").stdout)["alerts"]
        assert [a["subject"] for a in listed if a["kind"] == "ransomware"] == [made["point"]]
        assert len(hook.of("ransomware")) == 1
