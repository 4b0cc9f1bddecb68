"""Run `cairn` with the appliance and agent commands registered, whatever the main CLI has.

The test suites start real processes with this module so they exercise the real command
modules (`serve_cmd`, `agent_cmd`, ...) through the real `cairn.cli.main`.
"""

from __future__ import annotations

import sys

from cairn import cli

NEW = {"serve": "serve_cmd", "agent": "agent_cmd", "machines": "machines_cmd",
       "jobs": "jobs_cmd", "schedule": "schedule_cmd"}
for name, module in NEW.items():
    cli.COMMANDS.setdefault(name, module)

if __name__ == "__main__":
    sys.exit(cli.main())
