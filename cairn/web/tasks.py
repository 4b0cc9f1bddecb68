"""Long operations started from the console (a screenshot verification), run in a thread.

The operation itself is the library function the CLI runs; this only runs it off the
request, remembers how it went for the jobs page, and allows one task per point at a time.
Tasks live in memory: the appliance's own jobs (backups) are in its state database.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cairn import logs
from cairn.appliance.errors import Conflict
from cairn.errors import CairnError

KEEP = 200
"""Finished tasks remembered for the jobs page."""


@dataclass
class Task:
    id: int
    kind: str
    point: str
    user: str
    state: str = "running"
    started: float = field(default_factory=time.time)
    finished: float | None = None
    result: str = ""


class Tasks:
    def __init__(self) -> None:
        self._tasks: list[Task] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def start(self, kind: str, point: str, user: str, work: Callable[[], str]) -> Task:
        """Run ``work`` (returning a one-line result) in a thread, unless ``point`` is busy."""
        with self._lock:
            busy = self.active(point)
            if busy is not None:
                raise Conflict(f"point {point} is busy with {busy.kind} (task {busy.id}): "
                               "wait for it on the jobs page")
            task = Task(next(self._ids), kind, point, user)
            self._tasks.append(task)
            del self._tasks[:-KEEP]
        threading.Thread(target=self._run, args=(task, work), daemon=True,
                         name=f"console-{kind}").start()
        return task

    def _run(self, task: Task, work: Callable[[], str]) -> None:
        try:
            task.result = work()
            task.state = "succeeded"
        except CairnError as exc:
            task.result, task.state = str(exc), "failed"
        except Exception as exc:  # a bug: the page says so, the log keeps it
            task.result, task.state = f"internal error: {type(exc).__name__}: {exc}", "failed"
        task.finished = time.time()
        logs.event("console.task", kind=task.kind, point=task.point, state=task.state,
                   result=task.result)

    def active(self, point: str) -> Task | None:
        return next((t for t in self._tasks if t.point == point and t.state == "running"), None)

    def recent(self) -> list[Task]:
        with self._lock:
            return list(reversed(self._tasks))
