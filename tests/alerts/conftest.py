"""The appliance fixtures, shared with the appliance's own tests."""

from tests.appliance.conftest import appliance, make_agent

__all__ = ["appliance", "make_agent"]
