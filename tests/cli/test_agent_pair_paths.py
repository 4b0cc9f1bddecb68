"""`agent pair` without --config says where it writes before writing anything (issue 15)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.cli.test_cli import cairn


def test_pair_without_config_names_the_default_paths_first(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CAIRN_AGENT_CONFIG"}
    # Port 1 refuses: pairing fails before it writes, after the notice.
    result = cairn("agent", "pair", "--appliance", "https://127.0.0.1:1", "--token", "t",
                   "--state-dir", tmp_path / "state", env=env)
    assert result.returncode != 0
    notice, error = result.stderr.strip().splitlines()
    assert "/etc/cairn/agent.toml" in notice and str(tmp_path / "state") in notice
    assert "--config" in notice and error.startswith("cairn: error: ")
    assert not (tmp_path / "state").exists()

    given = cairn("agent", "pair", "--config", tmp_path / "agent.toml", "--appliance",
                  "https://127.0.0.1:1", "--token", "t")
    assert len(given.stderr.strip().splitlines()) == 1
