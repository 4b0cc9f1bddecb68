"""Print the byte ranges where two images differ, as `cairn backup --changed-ranges` takes them.

Stands in for a change tracker (CBT) in the demo and benchmarks: a real one knows the
ranges without reading anything.
"""

from __future__ import annotations

import json
import sys

BLOCK = 64 * 1024


def changed_ranges(old: str, new: str) -> list[list[int]]:
    ranges: list[list[int]] = []
    with open(old, "rb") as a, open(new, "rb") as b:
        offset = 0
        while True:
            x, y = a.read(BLOCK), b.read(BLOCK)
            if not y:
                return ranges
            if x != y:
                if ranges and ranges[-1][0] + ranges[-1][1] == offset:
                    ranges[-1][1] += len(y)
                else:
                    ranges.append([offset, len(y)])
            offset += len(y)


if __name__ == "__main__":
    json.dump(changed_ranges(sys.argv[1], sys.argv[2]), sys.stdout)
