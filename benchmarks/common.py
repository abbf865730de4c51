"""What every benchmark shares: where results go.

Results are JSON files in benchmarks/results/, or in $POSEPART_BENCH_RESULTS when set (the tests run every benchmark
into a temporary folder that way, so the committed results are never overwritten by a smoke run).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json(name: str, data: dict[str, Any]) -> Path:
    """Write `data` to <results>/<name> and say where."""
    out = Path(os.environ.get("POSEPART_BENCH_RESULTS") or Path(__file__).parent / "results") / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2))
    print(f"wrote {out}")
    return out
