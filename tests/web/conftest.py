"""A console over a real repository: two ext4 points of machine web01, users of both roles.

Built once per session (images with the real mkfs, backups through the real ingest); each
test gets its own app and client on a copy of the state only where it changes things.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cairn import scratch
from cairn.appliance.app import create_app
from cairn.appliance.config import ApplianceConfig
from cairn.appliance.state import State
from cairn.sources.image import ImageSource
from cairn.store.catalog import RecoveryPoint
from cairn.store.ingest import Ingest
from cairn.store.repository import Repository
from cairn.web.users import Users
from tests.insights import images

PASSWORD = "correct horse battery"


@dataclass
class Site:
    repo: Path
    state: State
    client: TestClient
    files: dict[str, bytes]
    image_a: Path
    points: list[RecoveryPoint]


def backup(repo_path: Path, volume: str, image: Path) -> RecoveryPoint:
    repo = Repository.open(repo_path)
    try:
        with ImageSource(image) as source:
            return Ingest(repo, volume, source).run(None)
    finally:
        repo.close()


@pytest.fixture(scope="session")
def two_points() -> Iterator[tuple[Path, dict[str, bytes], Path]]:
    """A repository template: web01.sda with points of an ext4 tree before and after edits."""
    work = scratch.make("cairn-web-")
    try:
        tree = work / "tree"
        tree.mkdir()
        files = images.make_tree(tree)
        image_a = images.make_ext4(tree, work / "a.img")
        (tree / "empty").unlink()
        (tree / "added.txt").write_bytes(b"new in b\n" * 100)
        (tree / "docs" / "readme.md").write_bytes(b"# readme, longer now\n" * 80)
        image_b = images.make_ext4(tree, work / "b.img")
        repo = work / "template"
        Repository.init(repo).close()
        backup(repo, "web01.sda", image_a)
        backup(repo, "web01.sda", image_b)
        yield repo, files, image_a
    finally:
        shutil.rmtree(work, ignore_errors=True)


def login(client: TestClient, name: str, password: str = PASSWORD, code: str = "",
          follow: bool = False) -> object:
    page = client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert token is not None
    return client.post("/login", data={"username": name, "password": password, "code": code,
                                       "login_token": token.group(1), "next": "/"},
                       follow_redirects=follow)


def csrf(client: TestClient, page: str = "/") -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', client.get(page).text)
    assert found is not None
    return found.group(1)


@pytest.fixture
def site(two_points: tuple[Path, dict[str, bytes], Path], tmp_path: Path) -> Iterator[Site]:
    template, files, image_a = two_points
    repo = tmp_path / "repo"
    shutil.copytree(template, repo)
    state = State(repo / "appliance.db")
    users = Users(state)
    users.add("alice", "admin", PASSWORD)
    users.add("victor", "viewer", PASSWORD)
    state.add_machine("web01")
    app = create_app(repo, state, ApplianceConfig())
    client = TestClient(app, base_url="https://testserver")
    opened = Repository.open(repo)
    points = opened.catalog.points()
    opened.close()
    try:
        yield Site(repo, state, client, files, image_a, points)
    finally:
        client.close()
        state.close()
