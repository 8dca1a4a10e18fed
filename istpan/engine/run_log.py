"""What a run leaves behind for humans and tools: `metrics.jsonl` (one JSON record per line) and TensorBoard scalars.

Only rank 0 writes. On resume, records past the checkpoint are dropped (a killed run may have logged steps that the
resumed run repeats), so the file always describes one consistent run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["RunLog"]


class RunLog:
    """Append-only metrics.jsonl plus optional TensorBoard writer (`tb/` beside it)."""

    def __init__(self, run_dir: Path, *, enabled: bool, tensorboard: bool, resume_step: int | None) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.writer = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        else:
            self._truncate(resume_step)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when asked for

            self.writer = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=resume_step or None)

    def _truncate(self, resume_step: int) -> None:
        """Keep only records of steps the checkpoint already contains."""
        if not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # half-written last line of a killed run
                continue
            if record.get("global_step", 0) <= resume_step:
                kept.append(line)
        self.path.write_text("".join(k + "\n" for k in kept))

    def log(self, record: dict[str, Any], *, scalars: dict[str, float] | None = None, step: int) -> None:
        """Append `record` to metrics.jsonl and write `scalars` (name -> value) to TensorBoard at `step`."""
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record, default=float) + "\n")
        if self.writer is not None:
            for name, value in (scalars or {}).items():
                if value is not None and math.isfinite(value):
                    self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None
