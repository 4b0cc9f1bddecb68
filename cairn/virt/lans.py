"""The appliance's isolated LANs: declared by name before a VM can join one.

A VM started with ``--network isolated:LAN`` joins the LAN of that name and nothing else.
Were a LAN made by its first VM, a typo (``isolated:ofice``) would quietly start a restored
application server on a LAN of its own, unable to reach its domain controller, and the admin
would find out from the users. So LANs are declared (`cairn vm lan add office`) and a VM
naming an undeclared one is refused before anything starts.

Each LAN gets a random identity when declared, and the multicast group its VMs meet on is
derived from it rather than from the name: two appliances on one host (or a test beside a
production appliance) that both have an ``office`` LAN do not share it. The list is
``<repo>/lans.json`` (mode 0600).
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cairn.errors import InUse, UsageError
from cairn.virt.vm_runner import write_json

LAN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")


@dataclass(frozen=True)
class Lan:
    name: str
    identity: str  # random: makes this appliance's LAN its own (see the module)
    created: float


class UnknownLan(UsageError):
    def __init__(self, name: str, known: list[str]) -> None:
        have = f" (declared: {', '.join(known)})" if known else " (none declared yet)"
        super().__init__(f"no isolated LAN {name!r}{have}: declare it with "
                         f"`cairn vm lan add {name}` or use a declared one")


def check_lan_name(name: str) -> None:
    if not LAN_NAME.match(name):
        raise UsageError(f"invalid LAN name {name!r}: use letters, digits, '.', '_' and '-' "
                         "(up to 32)")


class Lans:
    """The declared LANs of one appliance (its repository)."""

    def __init__(self, repo_path: Path) -> None:
        self.path = repo_path / "lans.json"
        self._lock = threading.Lock()

    def list(self) -> list[Lan]:
        try:
            saved = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        return [Lan(**lan) for lan in saved["lans"]]

    def get(self, name: str) -> Lan:
        lans = self.list()
        for lan in lans:
            if lan.name == name:
                return lan
        raise UnknownLan(name, [lan.name for lan in lans])

    def add(self, name: str) -> Lan:
        check_lan_name(name)
        with self._lock:
            lans = self.list()
            if any(lan.name == name for lan in lans):
                raise UsageError(f"LAN {name!r} is already declared: `cairn vm lan list` "
                                 "shows the LANs")
            lan = Lan(name, secrets.token_hex(16), time.time())
            self._save([*lans, lan])
        return lan

    def remove(self, name: str, users: list[str]) -> None:
        """Forget a LAN; refused while VMs (``users``) are plugged into it."""
        with self._lock:
            lans = self.list()
            if all(lan.name != name for lan in lans):
                raise UsageError(f"no isolated LAN {name!r} to remove: `cairn vm lan list` "
                               "shows the declared ones")
            if users:
                raise InUse(f"LAN {name!r} has VMs on it ({', '.join(users)}): stop them "
                            "first (`cairn vm stop NAME`)")
            self._save([lan for lan in lans if lan.name != name])

    def _save(self, lans: list[Lan]) -> None:
        write_json(self.path, {"lans": [asdict(lan) for lan in lans]})
