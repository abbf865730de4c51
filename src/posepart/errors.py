"""posepart's error types: the bottom of the layering (imports nothing from posepart).

The contract: a `PosepartError` is a user's mistake or an unusable input (a bad option, a broken file, a folder that
cannot be written). Its message names the file, key or value at fault; the `posepart` command prints it as one
`error: ...` line and exits 2. Any other exception is a bug in posepart and keeps its traceback.
Each error class keeps a builtin base as well (`class DatasetError(PosepartError, ValueError)`), so code that catches
the builtin one keeps working.
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class PosepartError(Exception):
    """A user's mistake or unusable input; the CLI prints `error: <message>` and exits 2. Anything else is a bug."""


class Interrupted(KeyboardInterrupt):
    """A job stopped by a signal (SIGINT or SIGTERM) once what it was doing had been saved: `signal` says which, so
    the command line exits 128 + its number, as the shell counts it."""

    def __init__(self, signal: int) -> None:
        super().__init__(f"interrupted by signal {int(signal)}")
        self.signal = int(signal)


class PosepartWarning(UserWarning):
    """Something a run goes on with that the user should know (settings that change nothing, a skeleton replaced, a
    slower path taken); the CLI prints `warning: <message>`, without Python's source line."""


class UsageError(PosepartError, ValueError):
    """Options or arguments that contradict each other or cannot work; the message names the option."""


class MissingFileError(PosepartError, FileNotFoundError):
    """A file the user named (a checkpoint, weights, a config) does not exist or is not a file."""


class OutputError(PosepartError, OSError):
    """An output cannot be written: a read-only folder, a full disk, a file where a folder should be."""


# Errors of the machine, never of posepart's code, wherever a write meets them (a full disk or quota, a read-only
# one, a file-size limit: `ulimit -f`): the CLI's error line, and training's (`engine.train`), name them as such
FULL_OR_READ_ONLY = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def _reason(err: OSError, path: Path) -> str:
    """Why `path` could not be written, from the OSError: the file standing where a folder should be, else the
    error's own words (and the file it names when that is not `path`)."""
    if err.errno in (errno.ENOTDIR, errno.EEXIST):
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            return f"{blocker} is a file, not a folder"
    if not err.strerror:
        return str(err)
    return f"{err.strerror} ({err.filename})" if err.filename and Path(err.filename) != path else err.strerror


def refuse_while_a_child_imports_main(what: str) -> None:
    """A UsageError when `what` is called while a child process started by "spawn" (the start method of macOS and
    Windows, and of posepart's parallel jobs) imports the main script, which happens where the script's work is not
    under `if __name__ == "__main__":`. Why: each loader worker or job then ran the script's training, demo or synth
    again, into the same folder (a lock error naming the script's own process, a run's logs deleted where there is
    no lock, junk run folders), with Python's own hint buried in hundreds of lines of tracebacks or never reached.
    (`_inheriting` is what Python's own check, `multiprocessing.spawn._check_not_importing_main`, reads.)"""
    import multiprocessing

    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise UsageError(f"{what} was called while a new process imported your script (processes start so on macOS "
                         f"and Windows, and for posepart's parallel jobs): put the script's work under "
                         f"`if __name__ == \"__main__\":`")


@contextmanager
def writing(path: str | os.PathLike[str]) -> Iterator[None]:
    """Write `path` inside this block: an OSError raised in it becomes an OutputError naming `path`."""
    try:
        yield
    except PosepartError:  # already says what is wrong (a missing input is not an output error)
        raise
    except OSError as err:
        raise OutputError(f"cannot write {path}: {_reason(err, Path(path))}") from err


def output_folder(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """Create the folder `option` names (with its parents), refused with an OutputError when it is a file, cannot be
    created, or is not writable: before any work is done rather than after it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {path}: not a folder (a file of that name exists)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{option} {path}: cannot create this folder: {_reason(err, path)}") from err
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {path}: this folder is not writable")
    return path
