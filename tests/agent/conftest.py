"""Fixtures: a running appliance per test and a factory of paired agents, always stopped."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.appliance.harness import Agent, Appliance


@pytest.fixture
def appliance(tmp_path: Path) -> Iterator[Appliance]:
    app = Appliance(tmp_path)
    try:
        app.start()
        yield app
    finally:
        app.stop()


@pytest.fixture
def make_agent(appliance: Appliance) -> Iterator[Callable[..., Agent]]:
    agents: list[Agent] = []

    def make(name: str, **settings: Any) -> Agent:
        agent = Agent(appliance, name, **settings)
        agents.append(agent)
        return agent

    try:
        yield make
    finally:
        for agent in agents:
            agent.stop()
