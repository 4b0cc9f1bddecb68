"""The API's JSON: every Unix time also as ``<field>_iso``, exactly as the CLI's ``--json``
(`cairn.times`), so a script reads one format whichever way it asks."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from cairn.times import with_iso_times


class IsoTimesJSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return super().render(with_iso_times(content))
