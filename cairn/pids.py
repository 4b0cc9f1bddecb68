"""Whether a process a file names (a pack's writer, a scratch folder's maker) still runs.

Why a module of its own: leftovers named for their process (packs being written, private
temporary folders) are removed only once that process is gone, and every such sweep must
read the kernel's answer the same way: a process of another user exists even though we may
not signal it.
"""

from __future__ import annotations

import os


def running(pid: int) -> bool:
    """Whether a process ``pid`` exists (any user's; a zombie counts until it is reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
