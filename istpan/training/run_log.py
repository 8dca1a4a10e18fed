"""What a run leaves behind for humans and tools: `metrics.jsonl` (one JSON record per line), TensorBoard scalars
and, optionally, a Weights & Biases run.

Only rank 0 writes. On resume, records past the checkpoint are dropped (a killed run may have logged steps that the
resumed run repeats), so the file always describes one consistent run. W&B: the run's id is the checkpoint's
`run_id`, so a resumed training continues the same W&B run (`resume="allow"`); W&B keeps the first value it received
for a step, so steps a killed run logged past its checkpoint are not overwritten there. `WANDB_MODE=offline` writes
the run under `<run_dir>/wandb/` for a later `wandb sync`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from istpan.errors import UserError

__all__ = ["RunLog"]


class RunLog:
    """Append-only metrics.jsonl plus optional TensorBoard writer (`tb/` beside it) and W&B run.

    wandb: None, or dict(project=..., name=..., id=..., config=...) for `wandb.init` (the package is an optional
    extra: `pip install 'istpan[wandb]'`).
    """

    def __init__(self, run_dir: Path, *, enabled: bool, tensorboard: bool, resume_step: int | None,
                 wandb: dict[str, Any] | None = None) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.writer = None
        self.wandb_run = None
        if not enabled:
            return
        if wandb is not None:
            self.wandb_run = _start_wandb(Path(run_dir), **wandb)
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
        finite = {k: v for k, v in (scalars or {}).items() if v is not None and math.isfinite(v)}
        if self.writer is not None:
            for name, value in finite.items():
                self.writer.add_scalar(name, value, step)
        if self.wandb_run is not None and finite:
            self.wandb_run.log(finite, step=step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None


def _start_wandb(run_dir: Path, *, project: str, name: str, id: str, config: dict[str, Any]):
    try:
        import wandb
    except ImportError:
        raise UserError("train.wandb=true needs the wandb package: pip install 'istpan[wandb]' (or train.wandb=false)"
                        ) from None
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        return wandb.init(project=project, name=name, id=id, resume="allow", config=config, dir=str(run_dir))
    except Exception as err:  # not logged in, no network without WANDB_MODE=offline, bad project name
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise UserError(f"train.wandb: W&B could not start ({first}); run `wandb login`, set WANDB_MODE=offline, "
                        "or train.wandb=false") from err
