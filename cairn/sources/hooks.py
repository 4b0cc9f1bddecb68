"""Consistency hooks: pre-freeze before a volume is read, post-thaw after, always.

A hook is a shell command (``sh -c``) run in its own process group with a timeout; on
timeout the whole group is killed, so a hung freeze script cannot leave children behind.
The thaw hook runs whenever the freeze hook was attempted, even if freezing failed or
the read failed in between: an application is never left frozen by cairn. A failing or
hung hook fails the job, and the error carries the hook's own output.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from cairn.errors import HookFailed

OUTPUT_TAIL = 2000


def run_hook(kind: str, command: str, timeout: float, volume: str) -> str:
    env = {**os.environ, "CAIRN_VOLUME": volume, "CAIRN_HOOK": kind}
    proc = subprocess.Popen(["sh", "-c", command], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env=env)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise HookFailed(f"{kind} hook for {volume} hung and was killed after {timeout:g} s "
                         f"({command}); output: {_tail(out)}") from None
    if proc.returncode != 0:
        raise HookFailed(f"{kind} hook for {volume} failed with exit status {proc.returncode} "
                         f"({command}); output: {_tail(out)}")
    return out.decode(errors="replace")


def _tail(out: bytes) -> str:
    text = out.decode(errors="replace").strip()
    return (text[-OUTPUT_TAIL:] if text else "(none)").replace("\n", " | ")


@contextmanager
def frozen(volume: str, pre: str | None, post: str | None, timeout: float) -> Iterator[None]:
    """Run ``pre``, the body, then ``post`` even when either of the first two failed."""
    try:
        if pre:
            run_hook("pre-freeze", pre, timeout, volume)
        yield
    except BaseException as failure:
        if post:
            try:
                run_hook("post-thaw", post, timeout, volume)
            except HookFailed as thaw:
                raise HookFailed(f"{failure}; and then: {thaw}") from failure
        raise
    if post:
        run_hook("post-thaw", post, timeout, volume)
