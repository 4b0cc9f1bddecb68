"""Healing damage from another copy of the repository (ZFS's way: a good copy heals).

A repository replicated to the cloud holds the same chunks under the same names (the same
key names them), so a chunk damaged or missing here can be fetched from there, and the
other way round. Each fetched chunk is checked against its hash twice, by the copy that
holds it (on read) and by this repository (it must name the same content), before it is
stored over the damaged one (``replace``); a chunk the copy lacks, or holds damaged too,
stays damaged and is reported. Healing a block-map node can reveal damage below it, so
verify and repair alternate until a round heals nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cairn.errors import Corruption
from cairn.meter import Meter
from cairn.store.repository import Repository
from cairn.store.verify import Report, verify

ROUNDS = 8


@dataclass
class Repair:
    """What a repair did: chunks stored again from the copy, and those it could not."""

    healed: list[str] = field(default_factory=list)
    unrepairable: dict[str, str] = field(default_factory=dict)


def fetch_good(repo: Repository, source: Repository, digests: list[bytes]) -> Repair:
    """Store again each of ``digests`` from ``source``, checking every one."""
    done = Repair()
    healed: list[bytes] = []
    for digest in digests:
        try:
            data = source.chunks.get(digest)
        except Corruption as exc:
            done.unrepairable[digest.hex()] = f"the copy's is damaged too: {exc}"
            continue
        if repo.chunks.hash(data) != digest:
            done.unrepairable[digest.hex()] = "the copy names other content (another key?)"
            continue
        repo.chunks.put(digest, data, replace=True)
        healed.append(digest)
    if healed:
        repo.chunks.backend.sync()
        repo.catalog.mark_healed(healed)
    done.healed = [h.hex() for h in healed]
    return done


def verify_and_repair(repo: Repository, source: Repository, read_data: bool = True,
                      progress: Meter | None = None) -> tuple[Report, Repair]:
    """Verify, heal what ``source`` holds good, and verify again until nothing heals;
    returns the last report (its ``healed`` lists what this repair healed) and the repair."""
    total = Repair()
    report = verify(repo, read_data=read_data, progress=progress)
    for _ in range(ROUNDS):
        wanted = [bytes.fromhex(h) for h in report.damaged if h not in total.unrepairable]
        if not wanted:
            break
        step = fetch_good(repo, source, wanted)
        total.healed += step.healed
        total.unrepairable.update(step.unrepairable)
        if not step.healed:
            break
        report = verify(repo, read_data=read_data, progress=progress)
    return report, total
