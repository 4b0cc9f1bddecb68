"""Long operations the API or the console starts (a screenshot verification, a cloud prune,
a conversion, a repack), run in a thread and watched while they run.

The operation itself is the library function the CLI runs; this only runs it off the
request, remembers how it went (its one-line result and its JSON report) for ``GET
/api/v1/tasks`` and the console's jobs page, shows its progress when it reports any
(`ops.progress`), and allows one task per subject at a time (a point, a cloud
repository, the local repository). Tasks live in memory, one registry per appliance
shared by the API and the console: the appliance's own jobs (backups) are in its state
database.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from cairn import logs
from cairn.appliance.errors import Conflict
from cairn.errors import CairnError
from cairn.ops.progress import Advance

KEEP = 200
"""Finished tasks remembered."""


@dataclass
class Outcome:
    """What a task's work returns: a line for people, and its report for programs."""

    line: str
    report: dict[str, Any] = field(default_factory=dict)


@dataclass
class Task:
    id: int
    kind: str
    subject: str
    """what it works on: a point id, a cloud repository's URL, ``repository``"""
    user: str
    link: str | None = None
    """the console page of ``subject``, if it has one"""
    state: str = "running"
    started: float = field(default_factory=time.time)
    finished: float | None = None
    result: str = ""
    report: dict[str, Any] = field(default_factory=dict)
    done: int = 0
    total: int = 0
    step: str = ""
    """what the work says it is doing (`progress`)"""
    unit: str = "bytes"
    """what ``done`` and ``total`` count: ``bytes``, or ``items`` (packs, volumes, points)"""
    phases: list[dict[str, Any]] = field(default_factory=list)
    """each step the work went through, with its counts (the last one is ``step``)"""

    def json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "subject": self.subject, "user": self.user,
                "state": self.state, "started": self.started, "finished": self.finished,
                "result": self.result, "report": self.report,
                "progress": {"done": self.done, "total": self.total, "step": self.step,
                             "unit": self.unit},
                "phases": [dict(p) for p in self.phases]}

    @contextmanager
    def progress(self, total: int, description: str, unit: str = "bytes"
                 ) -> Iterator[Advance]:
        """An `ops.progress.Progress`: the operation tells its task how far it is."""
        phase = {"step": description, "done": 0, "total": total, "unit": unit}
        self.phases.append(phase)
        self.total, self.done, self.step, self.unit = total, 0, description, unit

        def advance(n: int) -> None:
            self.done += n
            phase["done"] += n

        yield advance

    def counting(self, total: int, description: str) -> AbstractContextManager[Advance]:
        """`progress` in things done (packs, volumes, points), not bytes: the phases of a
        prune or a repack."""
        return self.progress(total, description, "items")


Work = Callable[[Task], Outcome]


class Tasks:
    def __init__(self) -> None:
        self._tasks: list[Task] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def start(self, kind: str, subject: str, user: str, work: Work,
              link: str | None = None) -> Task:
        """Run ``work`` in a thread, unless ``subject`` is busy (`Conflict`)."""
        with self._lock:
            busy = self.active(subject)
            if busy is not None:
                raise Conflict(f"{subject} is busy with {busy.kind} (task {busy.id}): wait "
                               "for it (the console's jobs page, or GET /api/v1/tasks/"
                               f"{busy.id})")
            task = Task(next(self._ids), kind, subject, user, link)
            self._tasks.append(task)
            del self._tasks[:-KEEP]
        threading.Thread(target=self._run, args=(task, work), daemon=True,
                         name=f"task-{kind}").start()
        return task

    def _run(self, task: Task, work: Work) -> None:
        try:
            outcome = work(task)
            task.result, task.report, task.state = outcome.line, outcome.report, "succeeded"
        except CairnError as exc:
            task.result, task.state = str(exc), "failed"
        except Exception as exc:  # a bug: the page says so, the log keeps it
            task.result, task.state = f"internal error: {type(exc).__name__}: {exc}", "failed"
        task.finished = time.time()
        logs.event("task.finished", kind=task.kind, subject=task.subject, state=task.state,
                   result=task.result)

    def active(self, subject: str) -> Task | None:
        return next((t for t in self._tasks if t.subject == subject and t.state == "running"),
                    None)

    def get(self, task_id: int) -> Task | None:
        with self._lock:
            return next((t for t in self._tasks if t.id == task_id), None)

    def recent(self) -> list[Task]:
        with self._lock:
            return list(reversed(self._tasks))
