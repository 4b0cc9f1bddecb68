"""The agent's tests use the appliance's fixtures: a running appliance and paired agents."""

from tests.appliance.conftest import appliance, make_agent

__all__ = ["appliance", "make_agent"]
