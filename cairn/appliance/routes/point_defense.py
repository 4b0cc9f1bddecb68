"""Locks, held deletes and undelete over REST (admin only): the CLI's operations, by HTTP.

``POST /points/{ref}/lock`` and ``/unlock``, ``DELETE /points/{ref}`` (held for the deletion
window; ``?now=true`` frees at once), ``POST /points/{ref}/undelete`` and ``GET
/points/deleted``. ``ref`` is what the CLI takes: an id, a unique prefix, ``VOLUME@latest``
or a machine point. Every route is for the admin token only: an agent's token answers 403,
so a compromised agent can neither delete its own backups for good nor lift a lock. The
work is `cairn.ops.points` and `cairn.ops.point_locks`, as for `cairn delete`, `undelete`,
`lock` and `unlock`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from cairn import logs
from cairn.appliance.auth import AdminOnly
from cairn.appliance.context import Ctx
from cairn.ops import point_locks
from cairn.ops.points import delete, undelete
from cairn.store import marks
from cairn.store.repository import Repository

router = APIRouter(prefix="/api/v1", tags=["points"], dependencies=[AdminOnly])


class LockRequest(BaseModel):
    until: str = Field(max_length=40, description="2027-06-30, 2027-06-30T12:00 or 30d")


@router.get("/points/deleted")
def deleted(ctx: Ctx) -> list[dict[str, Any]]:
    """Deleted points still restorable, oldest deletion first."""
    with Repository.open(ctx.repo_path) as repo:
        return point_locks.held_json(marks.held_points(repo))


@router.post("/points/{ref}/lock")
def lock(ref: str, body: LockRequest, ctx: Ctx) -> dict[str, Any]:
    """Nothing deletes or prunes the point before ``until``; a lock is extended, never
    shortened (409)."""
    with Repository.open(ctx.repo_path) as repo:
        result = point_locks.lock(repo, [ref], body.until)
    logs.event("api.point_locked", points=result.locked, until=result.locked_until)
    return result.json()


@router.post("/points/{ref}/unlock")
def unlock(ref: str, ctx: Ctx) -> dict[str, Any]:
    """Lift a lock whose date has passed (one still in force answers 409)."""
    with Repository.open(ctx.repo_path) as repo:
        return {"unlocked": point_locks.unlock(repo, [ref])}


@router.delete("/points/{ref}")
def delete_point(ref: str, ctx: Ctx, now: bool = False) -> dict[str, Any]:
    """Delete the point (a machine point whole): held restorable for the deletion window
    (``held_until``), or with ``now=true`` freed at once; locked or cloned points answer
    409 before anything is deleted."""
    with Repository.open(ctx.repo_path) as repo:
        result = delete(repo, [ref], now=now)
    logs.event("api.point_deleted", points=result.deleted, machine_points=result.machine_points,
               now=now, held_until=result.held_until)
    return {"deleted": result.deleted, "machine_points": result.machine_points,
            "held_until": result.held_until, "freed_chunks": result.freed_chunks}


@router.post("/points/{ref}/undelete")
def undelete_point(ref: str, ctx: Ctx) -> dict[str, Any]:
    """Bring back a deleted point still in its window."""
    with Repository.open(ctx.repo_path) as repo:
        return {"undeleted": undelete(repo, [ref])}
