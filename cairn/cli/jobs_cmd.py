"""`cairn jobs`: the job history (bytes read/sent/stored, durations, errors); run one now."""

from __future__ import annotations

import argparse
import time
from typing import Any

from cairn.cli._appliance import admin_client, admin_command, machine_action
from cairn.cli._common import human_bytes, print_json, print_json_line, row_line, table, when

FINAL = ("succeeded", "failed", "missed")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p, actions = admin_command(sub, "jobs",
                               "show the job history; `jobs run MACHINE` backs up now")
    p.add_argument("--machine", help="only this machine's jobs")
    p.add_argument("--follow", action="store_true", help="keep printing jobs as they change")
    run_now = machine_action(actions, "run", "queue a backup of a machine now")
    run_now.add_argument("--full-rescan", action="store_true",
                         help="ignore change tracking: the agent reads everything again")
    run_now.add_argument("--wait", action="store_true", help="wait until the job ends; "
                                                             "exit 1 if it failed")
    p.set_defaults(handler=run)


def _error(j: dict[str, Any]) -> str:
    """The job's error, else its retention's (the backup itself succeeded then)."""
    retention = j.get("retention") or {}
    return str(j["error"] or retention.get("error") or "")


def _retention(j: dict[str, Any]) -> str:
    """What the schedule's retention did after the job, in a few words."""
    r = j.get("retention")
    if not r:
        return "-"
    if r.get("error"):
        return "failed"
    deleted = r.get("deleted") or []
    if not deleted:
        return f"kept all ({r['policy']})" if r.get("policy") else "kept all"
    until = f", undelete until {when(r['held_until'])}" if r.get("held_until") else ""
    return f"deleted {len(deleted)} ({r.get('policy') or 'policy'}{until})"


def _row(j: dict[str, Any]) -> list[str]:
    return [str(j["id"]), j["machine"], j["state"], j["reason"], when(j["created"]),
            f"{j['seconds']:.1f}s" if j["seconds"] is not None else "-",
            human_bytes(j["bytes_read"]), human_bytes(j["bytes_sent"]),
            human_bytes(j["bytes_stored"]), _retention(j), _error(j)[:80]]


HEADERS = ["JOB", "MACHINE", "STATE", "REASON", "CREATED", "TOOK", "READ", "SENT", "STORED",
           "RETENTION", "ERROR"]
_FOLLOW_WIDTHS = [6, 16, 9, 8, 23, 8, 10, 10, 10, 12, 0]
"""Room for what --follow prints after the first table (states, sizes, times change)."""


def _print_retention(job: dict[str, Any]) -> None:
    """After `jobs run --wait`: each point the schedule's retention deleted, and why."""
    r = job.get("retention") or {}
    for point in r.get("deleted") or []:
        print(f"retention deleted point {point}: not kept by the schedule's policy "
              f"{r.get('policy')!r}; restorable with `cairn undelete {point}` until "
              f"{when(r['held_until']) if r.get('held_until') else 'the window ends'}")


def run(args: argparse.Namespace) -> int:
    with admin_client(args) as client:
        if args.action == "run":
            job = client.json("POST", f"/api/v1/machines/{args.name}/jobs",
                              json={"full_rescan": args.full_rescan})
            if not args.wait:
                if args.json:
                    print_json(job)
                else:
                    print(f"job {job['id']} queued for {args.name}")
                return 0
            while job["state"] not in FINAL:
                time.sleep(0.5)
                job = client.json("GET", f"/api/v1/jobs/{job['id']}")
            if args.json:
                print_json(job)
            else:
                table(HEADERS, [_row(job)])
                _print_retention(job)
            return 0 if job["state"] == "succeeded" else 1
        params: dict[str, Any] = {"machine": args.machine} if args.machine else {}
        jobs = client.json("GET", "/api/v1/jobs", params=params)
        if args.follow:
            return _follow(client, params, jobs, args.json)
        if args.json:
            print_json(jobs)
        else:
            table(HEADERS, [_row(j) for j in jobs])
        return 0


def _follow(client: Any, params: dict[str, Any], jobs: list[dict[str, Any]],
            as_json: bool) -> int:
    """`jobs --follow`: the jobs now, then each job again whenever its state changes; with
    ``--json`` one JSON object per line (JSON Lines), else table rows that line up."""
    widths: list[int] = []
    if as_json:
        for job in jobs:
            print_json_line(job)
    else:  # rows printed later line up with these (wider cells for a long machine name)
        widths = table(HEADERS, [_row(j) for j in jobs], least=_FOLLOW_WIDTHS)
    shown = {j["id"]: j["state"] for j in jobs}
    while True:
        time.sleep(1.0)
        for job in client.json("GET", "/api/v1/jobs", params={**params, "limit": 50}):
            if shown.get(job["id"]) != job["state"]:
                shown[job["id"]] = job["state"]
                if as_json:
                    print_json_line(job)
                else:
                    print(row_line(_row(job), widths), flush=True)
