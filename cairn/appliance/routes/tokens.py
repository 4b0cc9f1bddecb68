"""``/api/v1/tokens``: the appliance's admin and metrics tokens (`cairn.appliance.tokens`).

Admin only (the dependency is given where the router is included). A new token is shown
once, in the answer that made it; only its hash is kept.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from cairn import logs
from cairn.appliance import tokens
from cairn.appliance.state import State

TOKEN_ID = re.compile(r"^[0-9a-f]{12}$")


class NewToken(BaseModel):
    scope: Literal["admin", "metrics"] = "admin"
    label: str | None = Field(default=None, max_length=200)


def router(repo_path: Path, state: State) -> APIRouter:
    api = APIRouter(prefix="/api/v1/tokens")

    @api.get("")
    def list_tokens() -> list[dict[str, Any]]:
        return tokens.listing(state)

    @api.post("", status_code=201)
    def add_token(body: NewToken) -> dict[str, Any]:
        made = tokens.add(state, body.scope, body.label)
        logs.event("token.added", id=made["id"], scope=body.scope, label=body.label)
        return made

    @api.post("/rotate")
    def rotate_file_token() -> dict[str, Any]:
        made = tokens.rotate(repo_path, state)
        logs.event("token.rotated", id=made["id"])
        return made

    @api.delete("/{token_id}", status_code=204)
    def revoke_token(token_id: Annotated[str, PathParam(pattern=TOKEN_ID.pattern)]
                     ) -> Response:
        tokens.revoke(state, token_id)
        logs.event("token.revoked", id=token_id)
        return Response(status_code=204)

    return api
