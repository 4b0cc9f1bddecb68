"""``/api/v1/rollbacks``: roll a disk or image of the appliance host back to a point, writing
only the blocks that differ (`cairn.restore.rollback`, as `cairn rollback` does).

Admin only (the dependency is given where the router is included). An admin token is not
root on the host, so the target is confined (`cairn.restore.rollback_targets`): an unmounted
disk that holds nothing of the appliance's, or an image file in the config's ``[rollback]
image_dirs``; never the repository. The request runs until the rollback is done and answers
with what was read and written. Refusals (a target outside that, missing, smaller than the
point, mounted or loop-attached, or bad changed ranges) are 400s with one line, and nothing
is written.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from cairn import logs
from cairn.appliance.config import ApplianceConfig
from cairn.errors import DestinationError, UsageError
from cairn.restore.rollback import rollback
from cairn.restore.rollback_targets import TargetPolicy
from cairn.store.reader import PointReader
from cairn.store.repository import Repository


class RollbackRequest(BaseModel):
    point: str = Field(max_length=300, description="point id, prefix or VOLUME@latest")
    target: str = Field(min_length=1, max_length=4096,
                        description="a block device or image file on the appliance host")
    changed_ranges: list[list[int]] | None = Field(
        default=None, description="a change tracker's [offset, length] byte ranges written "
                                  "on the target since the point: only those are compared")


def router(repo_path: Path, config: ApplianceConfig) -> APIRouter:
    api = APIRouter(prefix="/api/v1/rollbacks")
    policy = TargetPolicy(repo_path, tuple(map(Path, config.rollback_image_dirs)))

    @api.post("")
    def roll_back(body: RollbackRequest) -> dict[str, Any]:
        with Repository.open(repo_path, read_only=True) as repo:
            point = repo.resolve(body.point)
            try:
                result = rollback(PointReader(repo, point), Path(body.target),
                                  body.changed_ranges, policy)
            except DestinationError as exc:
                raise UsageError(str(exc)) from None
        logs.event("point.rolled_back", point=point.id, target=body.target,
                   written=result.bytes_written)
        return asdict(result)

    return api
