"""The fine-tuned rows of the pretrained ablation: the whole MobileNetV2 trained with partial BN (TSN's recipe).

Why beside the cached table: the frozen-backbone rows (istpan/experiments/pretrained_ablation.py) can only say what
the layer does with ImageNet features as they are; the paper fine-tunes. These rows go through `istpan train`'s own
loop (`engine.train.train`, partial BN, validation after every epoch = the curve) on the same cluttered dataset,
so they cost a full backbone forward and backward per frame: on a CPU, only a subset and a few epochs fit, and the
JSON says exactly which (videos, epochs, seconds).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from istpan.data import synth
from istpan.experiments.pretrained_ablation import pretrained_rows
from istpan.experiments.runs import Budget, synth_config

__all__ = ["FINETUNE_ROWS", "run_finetune"]

FINETUNE_ROWS = ("TSN average consensus", "single scale (N=1)", "pyramid attention N=3",
                 "N=3 + both losses (β=0.1, γ=0.01)", "N=3 + time order (ours)")


def _subset(root: Path, split: str, per_class: int | None, out: Path) -> Path:
    """A list file with the first per_class videos of each class of the split (all when None)."""
    lines = (root / f"{split}.txt").read_text().split("\n")
    seen: dict[str, int] = {}
    keep = []
    for line in filter(None, lines):
        cls = line.rsplit(" ", 1)[1]
        if per_class is None or seen.get(cls, 0) < per_class:
            seen[cls] = seen.get(cls, 0) + 1
            keep.append(line)
    path = out / f"{split}_{per_class or 'all'}.txt"
    path.write_text("\n".join(keep) + "\n")
    return path


def run_finetune(
    out_dir: str | Path,
    *,
    data_root: str | Path,
    pretrained: str | Path,
    rows: tuple[str, ...] | None = None,
    seeds: int = 1,
    epochs: int = 4,
    lr: float = 1e-4,  # 1e-3 (AdamW, whole backbone) diverged here: train loss rose above ln 8 in 3 epochs
    batch_size: int = 8,
    train_per_class: int | None = 64,
    val_per_class: int | None = 32,
) -> dict[str, Any]:
    """Fine-tune each row (seed-major) and write finetune.json after each run: final top-1, the per-epoch validation
    curve, seconds. A rerun resumes (the engine resumes a cut run from its last checkpoint)."""
    from istpan.engine.train import train

    out, root = Path(out_dir), Path(data_root)
    out.mkdir(parents=True, exist_ok=True)
    train_list, val_list = _subset(root, "train", train_per_class, out), _subset(root, "val", val_per_class, out)
    spec = synth.load_ground_truth(root)["spec"]
    table = {r.name: r for r in pretrained_rows()}
    unknown = [n for n in rows or () if n not in table]
    if unknown:
        from istpan.errors import UserError

        raise UserError(f"--only {', '.join(unknown)}: not a row of the pretrained table (use full row names)")
    path = out / "finetune.json"
    result = json.loads(path.read_text()) if path.is_file() else {"runs": []}
    result.update(epochs=epochs, lr=lr, batch_size=batch_size, train_per_class=train_per_class,
                  val_per_class=val_per_class, data=str(root), spec=spec)
    budget = Budget(num_videos=spec["num_videos"], size=spec["size"], num_frames=spec["num_frames"], epochs=epochs,
                    batch_size=batch_size, segments=8, lr=lr, num_workers=0)
    for seed in range(seeds):
        for name in rows or FINETUNE_ROWS:
            if any(r["name"] == name and r["seed"] == seed for r in result["runs"]):
                continue
            row = table[name]
            cfg = synth_config(root, model=f"{row.family}_mobilenetv2", out_dir=out / "runs" / f"seed{seed}" /
                               "".join(c if c.isalnum() else "_" for c in name), budget=budget, seed=seed,
                               options=row.options, beta=row.beta, gamma=row.gamma)
            cfg.model.pretrained = str(pretrained)
            cfg.train.partial_bn = True  # the paper's (TSN's) fine-tuning recipe
            cfg.data.train_annotations, cfg.data.val_annotations = str(train_list), str(val_list)
            start = time.perf_counter()
            res = train(cfg, resume="auto", progress=False)
            curve = [h.get("val_top1") for h in res.get("history", [])]
            result["runs"].append(dict(name=name, seed=seed, top1=curve[-1] if curve else None, curve=curve,
                                       seconds=time.perf_counter() - start))
            path.write_text(json.dumps(result, indent=1))
    return result
