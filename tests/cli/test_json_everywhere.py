"""`--json` on every command that prints anything, audited command by command (issue 15).

Every leaf command the `COMMANDS` map registers either takes ``--json`` or is listed in
`NO_OUTPUT` with the reason. Each one that takes it is run here with it (on one small
repository, against one real `cairn serve`, or, for the few that need QEMU, an S3 server or
a terminal, in the test named in `ELSEWHERE`), and what it prints must be JSON: one document,
or JSON Lines for the commands that run until stopped. Every Unix time in it has its ISO 8601
twin with a zone (`cairn.times`), no other number looks like a time, no text holds a time
without a zone, and the tables beside it use binary units only.
"""

from __future__ import annotations

import argparse
import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cairn.cli import build_parser
from cairn.times import TIME_FIELDS
from tests.alerts.receivers import WebhookListener
from tests.appliance.harness import CLI, ENV, Appliance
from tests.cli.test_cli import ROOT
from tests.cli.test_repository_access import _image, batch
from tests.s3server import SeaweedS3

NO_OUTPUT = {
    "cat": "its output is the file's bytes",
    "mount": "prints nothing on stdout: its notes (mounted, unmounted) go to stderr",
    "serve": "the appliance daemon: its log is JSON lines on stderr (journald)",
    "agent run": "the agent daemon: its log is JSON lines on stderr (journald)",
}

ELSEWHERE = {
    "replicate": "tests/replication/test_replicate.py",
    "cloud prune": "tests/replication/test_cloud_prune.py",
    "cloud convert": "tests/replication/test_cloud_prune.py",
    "tasks": "tests/appliance/test_space_api.py",
    "tasks show": "tests/appliance/test_space_api.py",
    "screenshot-verify": "tests/virt/test_boot_points.py",
    "virtualize": "tests/virt/test_virtualize.py",
    "vm start": "tests/virt/test_vms.py",
    "vm stop": "tests/virt/test_vms.py",
    "vm console": "tests/virt/test_vms.py",
    **{f"exports{action}": "tests/appliance/test_exports_api.py"
       for action in ("", " start", " list", " show", " key", " stop")},
}
"""Commands that need QEMU, an S3 server or NBD clients: the test that runs them with ``--json``."""

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")
ZONELESS = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d)?(?![:\d])"
                      r"(?![+-]\d\d:\d\d| [A-Z]{2,5}\b)")
DECIMAL_UNITS = re.compile(r"\d ?(kB|KB|MB|GB|TB)\b")


def leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
           ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every command line that runs something: each action, and a command that runs
    without one (`machines` lists)."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if path and not (groups and groups[0].required):
        yield " ".join(path), parser
    for group in groups:
        for name, child in group.choices.items():
            yield from leaves(child, (*path, name))


def command_of(argv: list[str | Path], known: set[str]) -> str:
    """The command an argv runs: its first word, with its actions when it has some."""
    path = str(argv[0])
    for word in map(str, argv[1:]):
        longer = f"{path} {word}"
        if any(k == longer or k.startswith(f"{longer} ") for k in known):
            path = longer
    return path


def named(results: list[dict[str, Any]], *words: str) -> dict[str, Any]:
    """The result of the one command line holding all of ``words``."""
    [found] = [r for r in results if set(words) <= set(map(str, r["argv"]))]
    return found


def check_json(value: Any, where: str) -> None:
    """Times as the one format: Unix seconds beside ISO 8601 with the zone."""
    if isinstance(value, list):
        for item in value:
            check_json(item, where)
    elif isinstance(value, dict):
        for key, item in value.items():
            number = isinstance(item, int | float) and not isinstance(item, bool)
            if key in TIME_FIELDS and number:
                assert ISO.match(value.get(f"{key}_iso", "")), (where, key, value)
            elif number and not key.endswith(("bytes", "size", "_id")) and key != "size":
                assert not 1.5e9 < item < 4e9, f"{where}: {key}={item} looks like a time"
            check_json(item, where)
    elif isinstance(value, str):
        assert not ZONELESS.search(value), f"{where}: time without its zone in {value!r}"


def failures(results: list[dict[str, Any]]) -> list[str]:
    """What is wrong with each result, all at once: JSON where ``--json`` was given, else a
    table (`table_ok`)."""
    found = []
    for result in results:
        try:
            if "--json" in result["argv"]:
                parsed(result)
            else:
                table_ok(result)
        except (AssertionError, ValueError) as exc:
            found.append(f"{' '.join(map(str, result['argv']))}: {exc}")
    return found


def table_ok(result: dict[str, Any]) -> None:
    """A table beside the JSON: binary units, and times with their zone."""
    assert result["code"] == 0, result
    assert not DECIMAL_UNITS.search(result["stdout"]), result["stdout"]
    assert not ZONELESS.search(result["stdout"]), result["stdout"]


def parsed(result: dict[str, Any]) -> Any:
    where = " ".join(map(str, result["argv"]))
    assert result["code"] == 0, (where, result["stderr"])
    value = json.loads(str(result["stdout"]))
    check_json(value, where)
    return value


def test_every_command_that_prints_takes_json() -> None:
    without = {name for name, p in leaves(build_parser()) if "--json" not in
               p._option_string_actions}
    assert without == set(NO_OUTPUT)
    # and every option says what it does (`prune --keep-*` once had no help)
    bare = [(name, a.option_strings) for name, p in leaves(build_parser()) for a in p._actions
            if a.option_strings and not a.help and not isinstance(a, argparse._HelpAction)]
    assert bare == []
    for name, test in ELSEWHERE.items():
        text = (ROOT / test).read_text()
        assert name.split()[-1] in text and "--json" in text, (name, test)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("json")
    first, second = folder / "first.img", folder / "second.img"
    _image(first, folder / "a", "first\n")
    _image(second, folder / "b", "second\n")
    return {"folder": folder, "first": first, "second": second}


def local_commands(r: Path, f: dict[str, Path]) -> list[list[str | Path]]:
    """Each command on the repository, in an order that leaves each something to do; the
    points are named by what the two backups printed (`p1`, `p2` are filled in)."""
    out = f["folder"] / "out"
    out.mkdir(exist_ok=True)
    return [
        ["init", "--repo", r, "--block-size", "64K", "--json"],  # binary units read too
        ["backup", "--repo", r, "--volume", "v", f["first"], "--json"],
        ["backup", "--repo", r, "--volume", "v", f["second"], "--json"],
        ["points", "--repo", r, "--json"], ["stats", "--repo", r, "--json"],
        ["verify", "--repo", r, "--json"], ["ls", "--repo", r, "v@latest", "/", "--json"],
        ["diff", "--repo", r, "P1", "P2", "--json"],
        ["restore", "--repo", r, "v@latest", out / "v.img", "--json"],
        ["restore-files", "--repo", r, "P1", "/hello.txt", "--to", out / "files", "--json"],
        ["rollback", "--repo", r, "P1", "--to", out / "v.img", "--json"],
        ["clone", "--repo", r, "P1", "--name", "c1", "--json"],
        ["clones", "--repo", r, "--json"], ["clone-rm", "--repo", r, "c1", "--json"],
        ["lock", "--repo", r, "P1", "--until", "1d", "--json"],
        ["unlock", "--repo", r, "P2", "--json"],
        ["prune", "--repo", r, "--volume", "v", "--keep-last", "1", "--dry-run", "--json"],
        ["repack", "--repo", r, "--json"],
        ["delete", "--repo", r, "P2", "--json"],
        ["points", "--repo", r, "--deleted", "--json"],
        ["undelete", "--repo", r, "P2", "--json"],
        ["debug", "torture", "--seconds", "1", "--work", f["folder"] / "torture", "--json"],
        # the tables beside the JSON: binary units
        ["points", "--repo", r], ["stats", "--repo", r], ["verify", "--repo", r],
        ["ls", "--repo", r, "v@latest", "/"], ["repack", "--repo", r, "--dry-run"],
    ]


def test_local_commands_print_json(repository: dict[str, Path]) -> None:
    r = repository["folder"] / "repo"
    setup = batch(local_commands(r, repository)[:3])
    assert parsed(setup[0])["block_size"] == 64 * 1024
    p1, p2 = (parsed(x)["point"] for x in setup[1:])
    argvs = [[p1 if a == "P1" else p2 if a == "P2" else a for a in argv]
             for argv in local_commands(r, repository)[3:]]
    results = setup + batch(argvs)
    assert not failures(results), "\n".join(failures(results))
    assert parsed(named(results, "undelete"))["undeleted"] == [p2]
    export = exported(r, p1)
    assert export[0]["event"] == "exporting"
    assert export[0]["exports"][0]["url"].startswith("nbd://127.0.0.1:")
    assert export[-1] == {"event": "stopped"}
    ran = {command_of(x["argv"], set(dict(leaves(build_parser())))) for x in results}
    assert ran | {"export"} >= LOCAL


LOCAL = {"init", "backup", "points", "stats", "verify", "ls", "diff", "restore",
         "restore-files", "rollback", "clone", "clones", "clone-rm", "lock", "unlock", "prune",
         "repack", "delete", "undelete", "debug torture", "export"}


def exported(repo: Path, point: str) -> list[Any]:
    """`export --json` until its first line, then stopped: JSON Lines."""
    proc = subprocess.Popen([sys.executable, "-m", "cairn", "export", "--repo", str(repo),
                             point, "--nbd", "127.0.0.1:0", "--json"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in (first + rest).splitlines()]
    for line in lines:
        check_json(line, "export")
    return lines


def admin_commands(app: Appliance, agent: list[str | Path], image: Path, hook: str,
                   cloud: tuple[str, str]) -> list[list[str | Path]]:
    """The agent's and the admin's commands against one appliance, after `machines add`."""
    admin: list[str | Path] = [*app.admin_args(), "--json"]
    return [
        ["agent", "pair", *agent, "--appliance", app.url, "--token", "TOKEN",
         "--state-dir", agent[1].parent / "agent-state", "--json"],
        ["agent", "protect", *agent, "--volume", "sda", image, "--json"],
        ["agent", "status", *agent, "--json"],
        ["machines", *admin], ["jobs", *admin], ["jobs", "run", "web01", *admin],
        ["schedule", "set", "web01", "--every", "5m", *admin], ["schedule", *admin],
        ["schedule", "remove", "web01", *admin],
        ["alerts", "set", "--webhook", hook, *admin], ["alerts", *admin],
        ["alerts", "test", *admin],
        ["offsite", "set", "web01", "--to", cloud[0], "--s3-endpoint", cloud[1], *admin],
        ["offsite", *admin],
        ["offsite", "run", "web01", *admin], ["offsite", "remove", "web01", *admin],
        ["tokens", "add", "--metrics", *admin], ["tokens", *admin], ["vm", "list", *admin],
        ["vm", "lan", "add", "lan1", *admin], ["vm", "lan", "list", *admin],
        ["vm", "lan", "rm", "lan1", *admin],
        ["users", "--repo", app.repo, "--json"],
        # the tables beside the JSON: binary units, times with their zone
        ["machines", *app.admin_args()], ["jobs", *app.admin_args()],
    ]


def test_appliance_commands_print_json(tmp_path: Path, s3_server: SeaweedS3) -> None:
    app = Appliance(tmp_path, env={"CAIRN_S3_ACCESS_KEY": s3_server.access_key,
                                   "CAIRN_S3_SECRET_KEY": s3_server.secret_key})
    image = tmp_path / "disk.img"
    _image(image, tmp_path / "files", "web01\n")
    cloud = f"s3://{s3_server.bucket}/json-{tmp_path.name}", s3_server.endpoint
    app.start()
    try:
        first = batch([["machines", "add", "web01", *app.admin_args(), "--json"]], env=ENV)
        token = parsed(first[0])["pairing_token"]
        with WebhookListener() as hook:
            argvs = admin_commands(app, ["--config", tmp_path / "agent.toml"], image, hook.url,
                                   cloud)
            results = first + batch([[token if a == "TOKEN" else a for a in argv]
                                     for argv in argvs], env=ENV)
        assert not failures(results), "\n".join(failures(results))
        metrics = parsed(named(results, "tokens", "add"))
        table, lines = followed(app, tmp_path / "agent.toml")
        more = batch([["tokens", "revoke", str(metrics["id"]), *app.admin_args(), "--json"],
                      ["machines", "remove", "web01", *app.admin_args(), "--json"]], env=ENV)
        more += [stdin_command(["users", "--repo", app.repo, action, "ann", *extra])
                 for action, extra in (("add", ["--role", "viewer", "--password-stdin"]),
                                       ("passwd", ["--password-stdin"]), ("rm", []))]
        more += [stdin_command(["tokens", "rotate", *app.admin_args()])]
        assert not failures(more), "\n".join(failures(more))
    finally:
        app.stop()
    known = set(dict(leaves(build_parser())))
    ran = {command_of(x["argv"], known) for x in results + more}
    assert ran == known - LOCAL - set(NO_OUTPUT) - set(ELSEWHERE)
    # `jobs --follow`: rows printed as states change line up with the first table's columns
    starts = [m.start() for m in re.finditer(r"\S+", table[0])]
    assert len(table) > 2 and all(row[s - 2:s] in ("  ", "") for row in table[1:]
                                  for s in starts[1:]), table
    assert [json.loads(line)["state"] for line in lines][-1] == "succeeded"


def followed(app: Appliance, agent: Path) -> tuple[list[str], list[str]]:
    """What `jobs --follow` prints, as a table and with ``--json``, while the agent runs the
    job queued for web01, until the job succeeded."""
    follow = [subprocess.Popen([*CLI, "jobs", "--follow", *app.admin_args(), *extra],
                               stdout=subprocess.PIPE, text=True, cwd=ROOT, env=ENV)
              for extra in ([], ["--json"])]
    try:
        ran = subprocess.run([*CLI, "agent", "run", "--once", "--config", str(agent)],
                             capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=120,
                             check=False)
        assert ran.returncode == 0, ran.stderr
        return read_until(follow[0], "succeeded"), read_until(follow[1], "succeeded")
    finally:
        for proc in follow:
            proc.kill()
            proc.wait()


def read_until(proc: subprocess.Popen[str], word: str, timeout: float = 60) -> list[str]:
    """Lines ``proc`` prints, up to the first holding ``word`` (read by a thread, so a
    process that prints nothing more fails the test after ``timeout`` instead of hanging)."""
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout or ()],
                     daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while not seen or word not in seen[-1]:
        try:
            seen.append(lines.get(timeout=max(0.0, deadline - time.monotonic())).rstrip("\n"))
        except queue.Empty:
            raise AssertionError(f"no line with {word!r} after {seen}") from None
    return seen


def stdin_command(argv: list[str | Path]) -> dict[str, Any]:
    """A command that reads a password from standard input, in a process of its own."""
    done = subprocess.run([*CLI, *map(str, argv), "--json"], input="a long password\n",
                          text=True, capture_output=True, cwd=ROOT, env=ENV, timeout=120,
                          check=False)
    return {"argv": [*argv, "--json"], "code": done.returncode, "stdout": done.stdout,
            "stderr": done.stderr}
