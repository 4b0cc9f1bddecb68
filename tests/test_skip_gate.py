"""CI fails when a test is skipped: run a skipping test in a child pytest and read its exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_child(tmp_path: Path, allow: bool) -> subprocess.CompletedProcess[str]:
    test = tmp_path / f"test_probe_{int(allow)}.py"
    test.write_text("import pytest\n\ndef test_needs_a_tool() -> None:\n"
                    "    pytest.skip('missing: some-tool')\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CAIRN_ALLOW_SKIPS", None)
    if allow:
        env["CAIRN_ALLOW_SKIPS"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "tests.conftest", str(test)], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)


def test_a_skipped_test_fails_the_run(tmp_path: Path) -> None:
    refused = run_child(tmp_path, allow=False)
    assert refused.returncode == 1, refused.stdout
    assert "missing: some-tool" in refused.stdout
    assert run_child(tmp_path, allow=True).returncode == 0
