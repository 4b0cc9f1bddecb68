"""Who is calling, as FastAPI dependencies: the one place the API checks tokens.

Three kinds of caller, told apart by their bearer token: the admin (token made at first
start, in ``<repo>/admin-token``), an agent (token issued at pairing, scoped to its one
machine: any other machine's objects answer 403), and nobody (pairing, health).
``/metrics`` takes the admin token or a metrics-only token (`cairn.appliance.tokens`).

- ``dependencies=[AdminOnly]`` on a route or router: the admin only (`ScraperOnly`: the
  admin or a metrics token);
- a parameter typed `AgentMachine`: an agent, and the machine it speaks for;
- `NamedMachine`: the machine of the ``{name}`` path parameter (404 if none), for routes
  already limited to the admin;
- `VisibleMachine`: the ``{name}`` machine when the caller is the admin or its own agent.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Header, HTTPException

from cairn.appliance.context import Ctx
from cairn.appliance.errors import Forbidden, NotFound
from cairn.appliance.state import Machine
from cairn.errors import UsageError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")

Authorization = Annotated[str | None, Header()]


def check_name(kind: str, name: str) -> str:
    if not NAME.match(name):
        raise UsageError(f"invalid {kind} name {name!r}: use letters, digits, '_' and '-' "
                         "(up to 63, starting with a letter or digit)")
    return name


def bearer(authorization: str | None) -> str:
    if not authorization or not authorization.startswith("Bearer "):
        raise HTTPException(401, "no token: send 'Authorization: Bearer TOKEN'")
    return authorization[len("Bearer "):].strip()


def admin(ctx: Ctx, authorization: Authorization = None) -> None:
    token = bearer(authorization)
    if ctx.state.is_admin(token):
        return
    if ctx.state.agent(token) is not None:
        raise HTTPException(403, "an agent token cannot do this: use the admin token")
    raise HTTPException(401, "unknown token: use the admin token from <repo>/admin-token")


def scraper(ctx: Ctx, authorization: Authorization = None) -> None:
    """The admin token or a metrics-only one."""
    if ctx.state.token_scope(bearer(authorization)) is None:
        raise HTTPException(401, "unknown token: use the admin token or a metrics token "
                                 "(`cairn tokens add --metrics`)")


def agent(ctx: Ctx, authorization: Authorization = None) -> Machine:
    machine = ctx.state.agent(bearer(authorization))
    if machine is None:
        raise HTTPException(401, "unknown agent token: pair again with `cairn agent pair`")
    ctx.state.seen(machine.id)
    return machine


def named_machine(name: str, ctx: Ctx) -> Machine:
    machine = ctx.state.machine(check_name("machine", name))
    if machine is None:
        raise NotFound(f"no machine {name!r}: `cairn machines` lists them")
    return machine


def visible_machine(name: str, ctx: Ctx, authorization: Authorization = None) -> Machine:
    """``name`` if the caller is the admin or that machine's own agent."""
    token = bearer(authorization)
    machine = ctx.state.machine(check_name("machine", name))
    if ctx.state.is_admin(token):
        if machine is None:
            raise NotFound(f"no machine {name!r}: `cairn machines` lists them")
        return machine
    caller = ctx.state.agent(token)
    if caller is None:
        raise HTTPException(401, "unknown token")
    if machine is None or caller.id != machine.id:
        raise Forbidden(f"this agent's token is for {caller.name}, not {name}")
    return machine


AdminOnly = Depends(admin)
ScraperOnly = Depends(scraper)
AgentMachine = Annotated[Machine, Depends(agent)]
NamedMachine = Annotated[Machine, Depends(named_machine)]
VisibleMachine = Annotated[Machine, Depends(visible_machine)]
