"""Running `posepart` in the test process the way a user meets it: exit code and console text, and any exception
that escapes `main` turned into a test failure showing its traceback (the fuzz suites' point: none may escape)."""

from __future__ import annotations

import os
import traceback
from pathlib import Path

import pytest

from posepart import cli


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """`posepart ARGV` in this process -> (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        code = cli.main(argv)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 2
    except BaseException:  # noqa: BLE001 - no exception may reach the user
        pytest.fail(f"posepart {' '.join(argv)} raised:\n{traceback.format_exc()}")
    out = capsys.readouterr()
    return code, out.out, out.err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


def refused(code: int, err: str) -> bool:
    """Exit 2 with one `error: ...` line that names something, and no traceback."""
    lines = error_lines(err)
    return code == 2 and len(lines) == 1 and len(lines[0]) > len("error: ") + 10 and "Traceback (most recent" not in err


def child_processes(parent: int) -> dict[str, bytes]:
    """{pid: command line} of the processes whose parent is `parent` (read from Linux's /proc): the workers a
    posepart command started."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
            line = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, IndexError):  # ended meanwhile
            continue
        if ppid == str(parent):
            found[pid] = line
    return found
