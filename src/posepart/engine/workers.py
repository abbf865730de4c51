"""Training's loader workers: what they do first, and how they are started so that a signal cannot kill them midway.

Kept apart from `engine.data` (which imports Lightning): under the "spawn" start method (macOS, Windows) every worker
imports the module of its `worker_init_fn` afresh, and Lightning cost each one about 3 s and 0.5 GB.
"""

from __future__ import annotations

import gc
from typing import Any

from torch.utils.data import DataLoader

from posepart.processes import ignore_stop_signals, stop_signals_blocked


def share_inherited_objects(worker_id: int) -> None:
    """A loader worker's first acts: the objects it inherited from the training process are set aside from its
    garbage collector (`gc.freeze`, as Python's docs advise for forked children). Why: a full collection in the
    worker writes to the header of every object it tracks, and so copies every page the parent's objects lie on
    (the training process's ~1e6 objects: 100+ MB per worker); frozen, they stay shared pages. And SIGINT and
    SIGTERM are left to the training process, which stops at a step's end (`StopOnSignal`) and ends its workers:
    sent to the whole process group (a terminal's Ctrl-C, Slurm, systemd), they killed the workers first, and the
    run died of a DataLoader error with nothing saved. The worker was started with both blocked (`StartsWorkers`):
    ignored now, they are unblocked (one that came meanwhile is dropped)."""
    gc.freeze()
    ignore_stop_signals()


class StartsWorkers(DataLoader):
    """A DataLoader whose workers start with SIGINT and SIGTERM blocked, until `share_inherited_objects` ignores
    them. Why: a forked worker inherits the training process's handlers, but a spawned one (macOS, Windows, or
    `multiprocessing_context="spawn"`) runs with the default ones for the seconds it takes to import torch and
    posepart, and a Ctrl-C or SIGTERM to the process group then killed it: a DataLoader traceback with nothing saved,
    or a run that never ended (the parent blocked writing the dataset to a dead worker, or joining workers that
    ignore SIGTERM at exit). A child inherits its parent's signal mask, through fork and exec alike."""

    def _get_iterator(self) -> Any:
        if not self.num_workers:
            return super()._get_iterator()
        with stop_signals_blocked():  # this thread's mask: the thread that starts them
            return super()._get_iterator()
