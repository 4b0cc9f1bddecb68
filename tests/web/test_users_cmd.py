"""`cairn users`: add, list, change a password, remove; passwords only from standard input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cairn.appliance.state import State
from cairn.store.repository import Repository
from cairn.web.users import Users

ROOT = Path(__file__).resolve().parents[2]


def cairn(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cairn", *args], input=stdin, text=True,
                          capture_output=True, cwd=ROOT, timeout=60)


def test_users_lifecycle(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    Repository.init(repo).close()
    r = cairn("users", "--repo", str(repo), "add", "alice", "--role", "admin",
              "--password-stdin", stdin="first password\n")
    assert r.returncode == 0, r.stderr
    r = cairn("users", "--repo", str(repo), "add", "bob", "--role", "viewer",
              "--password-stdin", "--totp", stdin="bob's password\n")
    assert r.returncode == 0 and "otpauth://totp/cairn:bob" in r.stdout
    listed = json.loads(cairn("users", "--repo", str(repo), "--json").stdout)
    assert [(u["name"], u["role"], u["totp"]) for u in listed] == [
        ("alice", "admin", False), ("bob", "viewer", True)]

    again = cairn("users", "--repo", str(repo), "add", "alice", "--role", "viewer",
                  "--password-stdin", stdin="another password\n")
    assert again.returncode == 2 and "already exists" in again.stderr
    short = cairn("users", "--repo", str(repo), "add", "carol", "--role", "viewer",
                  "--password-stdin", stdin="short\n")
    assert short.returncode == 2 and "too short" in short.stderr
    assert "Traceback" not in short.stderr + again.stderr

    r = cairn("users", "--repo", str(repo), "passwd", "alice", "--password-stdin",
              stdin="second password\n")
    assert r.returncode == 0, r.stderr
    state = State(repo / "appliance.db")
    try:
        users = Users(state)
        assert users.authenticate("alice", "first password") is None
        found = users.authenticate("alice", "second password")
        assert found is not None and found.admin
    finally:
        state.close()

    assert cairn("users", "--repo", str(repo), "rm", "bob").returncode == 0
    gone = cairn("users", "--repo", str(repo), "rm", "bob")
    assert gone.returncode == 2 and "no user 'bob'" in gone.stderr
    assert "bob" not in cairn("users", "--repo", str(repo)).stdout


def test_users_needs_a_repository(tmp_path: Path) -> None:
    r = cairn("users", "--repo", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "not a cairn repository" in r.stderr
