"""``/metrics`` in the Prometheus text format (version 0.0.4), without a client library.

Counters that only this process sees (bytes received, commits, HTTP errors) live here;
everything the database already knows (jobs by state, machines online) is read at scrape
time, so the numbers survive a restart and never drift from the job history.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections import Counter

from cairn.appliance.state import State

_lock = threading.Lock()
_counters: Counter[str] = Counter()
STARTED = time.time()


def add(name: str, value: float = 1.0) -> None:
    with _lock:
        _counters[name] += value


def _line(out: list[str], name: str, kind: str, help_text: str,
          samples: list[tuple[str, float]]) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        out.append(f"{name}{labels} {number(value)}")


def number(value: float) -> str:
    """A sample's value, exactly: integers in full (byte counters, Unix times) and floats
    with every digit (``repr``); ``:g`` kept 6 significant digits, wrong rates follow."""
    if float(value).is_integer() and abs(value) < 2**63:
        return str(int(value))
    return repr(float(value))


def render(state: State, offline_after: float) -> str:
    out: list[str] = []
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _line(out, "process_cpu_seconds_total", "counter", "CPU time of the appliance process.",
          [("", float(usage.ru_utime + usage.ru_stime))])
    _line(out, "process_start_time_seconds", "gauge", "Start time of the appliance process.",
          [("", STARTED)])
    _line(out, "process_resident_memory_bytes", "gauge", "Peak resident memory.",
          [("", float(usage.ru_maxrss * 1024))])
    totals = state.job_totals()
    _line(out, "cairn_jobs", "gauge", "Jobs in the history by state.",
          [(f'{{state="{s}"}}', float(totals["by_state"].get(s, 0)))
           for s in ("queued", "running", "succeeded", "failed", "missed")])
    for key, help_text in (("bytes_read", "Bytes agents read for succeeded jobs."),
                           ("bytes_sent", "Bytes agents sent for succeeded jobs."),
                           ("bytes_stored", "Bytes stored (compressed) for succeeded jobs.")):
        _line(out, f"cairn_job_{key}_total", "counter", help_text, [("", float(totals[key]))])
    _line(out, "cairn_job_seconds", "summary", "Duration of succeeded jobs.",
          [("_sum", float(totals["seconds"])), ("_count", float(totals["succeeded"]))])
    now = time.time()
    machines = state.machines()
    online = sum(1 for m in machines if m.last_seen and now - m.last_seen <= offline_after)
    _line(out, "cairn_machines", "gauge", "Machines known to the appliance.",
          [('{status="online"}', float(online)),
           ('{status="offline"}', float(len(machines) - online))])
    with _lock:
        counters = dict(_counters)
    for name, help_text in (
            ("cairn_upload_bytes_received_total", "Volume bytes received from agents."),
            ("cairn_upload_commits_total", "Uploads committed as recovery points."),
            ("cairn_upload_bodies_refused_total", "Upload bodies refused as too many at once."),
            ("cairn_upload_commit_seconds_total", "Time spent committing uploads (ingest)."),
            ("cairn_points_pruned_total", "Points deleted by retention after backups."),
            ("cairn_retention_failures_total", "Retention runs after backups that failed."),
            ("cairn_repack_bytes_total", "Chunk bytes the repack loop moved (`repacker`)."),
            ("cairn_http_client_errors_total", "Requests answered with a 4xx status.")):
        _line(out, name, "counter", help_text, [("", float(counters.get(name, 0.0)))])
    _line(out, "cairn_upload_bodies_reading", "gauge", "Upload bodies being read now.",
          [("", float(counters.get("cairn_upload_bodies_reading", 0.0)))])
    _line(out, "cairn_appliance_pid", "gauge", "Process id, for the bench.",
          [("", float(os.getpid()))])
    return "\n".join(out) + "\n"
