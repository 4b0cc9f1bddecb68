"""Run many `cairn` command lines in one process: ``python -m tests.cli.cli_batch < argvs.json``.

Each command line goes through `cairn.cli.main` as a user would run it, with its file
descriptors 1 and 2 sent to files; one JSON list of ``{"code", "stdout", "stderr"}`` comes
back on stdout. A sweep of dozens of commands then costs one interpreter start, not dozens.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

from cairn.cli import main


def run_one(argv: list[str]) -> dict[str, object]:
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
        out.seek(0)
        err.seek(0)
        return {"argv": argv, "code": code, "stdout": out.read().decode(errors="replace"),
                "stderr": err.read().decode(errors="replace")}


if __name__ == "__main__":
    results = [run_one(argv) for argv in json.load(sys.stdin)]
    json.dump(results, sys.stdout)
