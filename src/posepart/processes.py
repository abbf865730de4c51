"""Child processes and the signals that stop a run: the bottom of the layering (imports nothing from posepart).

posepart's child processes (loader workers, parallel jobs, synthetic-data writers) leave SIGINT and SIGTERM to the
process that started them, which stops its work cleanly (a training at a step's end, saved): a terminal's Ctrl-C,
Slurm and systemd signal every process of the group, and a child killed by one broke its parent's pool or loader.
They start with both blocked (`stop_signals_blocked`) and ignore them as their first act (`ignore_stop_signals`).
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def ignore_stop_signals() -> None:
    """A child process's SIGINT and SIGTERM ignored, then unblocked if it was started with them blocked
    (`stop_signals_blocked`): one that came meanwhile is dropped, left to the parent."""
    for sent in STOP_SIGNALS:
        signal.signal(sent, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


@contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """SIGINT and SIGTERM blocked in this thread while it starts child processes, which inherit the mask (through
    fork and exec alike) and so cannot be killed by one before they ignore it (`ignore_stop_signals`); one that came
    meanwhile reaches this process when the block ends. Why: a spawned child runs with the default handlers while
    it imports torch and posepart (seconds): a Ctrl-C then killed it with a traceback, or broke the parent's loader."""
    if not hasattr(signal, "pthread_sigmask"):  # (Windows)
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
