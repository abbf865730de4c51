"""Which process of a launch this is. A DDP run is one launch of several processes (Lightning's subprocess launcher,
torchrun or SLURM start the others with their rank in the environment); what should happen once per launch (claim
the run folder, say what is being read) happens in the first alone. Read from the environment, not from Lightning's
`rank_zero_only.rank`, which is 0 on every node's first process before the Trainer exists (`NODE_RANK` alone set)."""

from __future__ import annotations

import os

RANK_VARIABLES = ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID")


def first_process() -> bool:
    """Whether this is the launch's first process (not a DDP worker Lightning, torchrun or SLURM started)."""
    return all(os.environ.get(name, "0") == "0" for name in RANK_VARIABLES)
