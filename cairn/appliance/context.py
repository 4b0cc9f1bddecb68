"""What every route of the appliance needs, handed to it as a FastAPI dependency.

`create_app` puts one `Context` on the application; a route asks for it with a parameter
typed `Ctx`. Routers stay module-level objects with no closures, so each area's routes
read on their own and tests can build an app over any repository.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from cairn.appliance.config import ApplianceConfig
from cairn.appliance.state import State
from cairn.appliance.tasks import Tasks
from cairn.appliance.uploads import Uploads


@dataclass(frozen=True)
class Context:
    repo_path: Path
    state: State
    config: ApplianceConfig
    uploads: Uploads
    tasks: Tasks
    """long operations under way (`appliance.tasks`), shared with the console"""


def context(request: Request) -> Context:
    ctx: Context = request.app.state.cairn
    return ctx


Ctx = Annotated[Context, Depends(context)]
