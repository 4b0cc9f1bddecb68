"""Where a cloud repository lives, remembered on this node: its endpoint, region and
addressing style, written by `cairn init` (and by the first open that names an endpoint
when there is none yet), so every later command needs only ``--repo s3://B/P``.

One JSON file maps each ``s3://`` location to its profile: ``$CAIRN_PROFILES``, default
``clouds.json`` beside the integrity keys (``~/.config/cairn/clouds.json``), mode 0600,
replaced atomically. An endpoint given on the command line or in ``CAIRN_S3_ENDPOINT``
always wins over the profile.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from cairn.store.keys import keys_dir


@dataclass(frozen=True)
class Profile:
    endpoint: str
    region: str
    path_style: bool = True
    """``ENDPOINT/BUCKET`` addressing (MinIO, SeaweedFS, Ceph); False: ``BUCKET.ENDPOINT``."""


def is_cloud(location: str) -> bool:
    """Whether a repository location names a bucket (``s3://BUCKET/PREFIX``), not a path."""
    return location.startswith("s3://")


def profiles_path() -> Path:
    return Path(os.environ.get("CAIRN_PROFILES") or keys_dir().parent / "clouds.json")


def _key(url: str) -> str:
    return url.rstrip("/")


def _all() -> dict[str, dict[str, object]]:
    try:
        raw = json.loads(profiles_path().read_text())
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def load(url: str) -> Profile | None:
    """The profile of ``url``, or None (none saved, or the file is unreadable)."""
    raw = _all().get(_key(url))
    if not isinstance(raw, dict):
        return None
    try:
        return Profile(str(raw["endpoint"]), str(raw["region"]), bool(raw.get("path_style",
                                                                              True)))
    except KeyError:
        return None


def save(url: str, profile: Profile) -> None:
    """Remember ``profile`` for ``url`` (over any earlier one)."""
    path = profiles_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    found = _all()
    found[_key(url)] = asdict(profile)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(found, f, indent=2)
            f.write("\n")
        tmp.rename(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
