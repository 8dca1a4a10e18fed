"""The fine-tuned rows of the pretrained ablation: the whole MobileNetV2 trained with partial BN (TSN's recipe).

Why beside the cached table: the frozen-backbone rows (istpan/experiments/pretrained_ablation.py) can only say what
the layer does with ImageNet features as they are; the paper fine-tunes. These rows go through `istpan train`'s own
loop (`training.train.train`: partial BN, warm-up + cosine, validation after every epoch = the curve) on the same
cluttered dataset, then the last checkpoint is scored by the engine's `evaluate` on every validation video, and
which videos each run got right is kept, so the rows are compared pairwise (same seeds, same videos) with the
intervals of the frozen table (istpan/experiments/pretrained_report.py, stats.py).

The recipe (`FinetuneSetup`; our choices, measured on this 2-core CPU, docs/ablation.md): new layers (attention,
head) at AdamW lr 1e-3 and the backbone at 0.01 x that. With one lr for everything the pilot either diverged (1e-3)
or, at 1e-4, started learning on one seed of two; with the backbone at 0.1 x 1e-3, TSN and N = 3 predicted one class
for 2 epochs with a training loss that did not fall, at 0.01 x the loss fell from the start and both left chance in
epoch 3 (0.1 was not run longer: a choice under a CPU budget, not a proof that it fails). Half an epoch of warm-up,
then cosine to 0 over 8 epochs, so the end of the schedule is the plateau. Train at K = 4 segments, validate and
test at K = 8: the layer has no K-dependent parameter (the paper's "any K"; TSN itself trains on 3), and K = 4
halves the backbone's cost, the whole cost on a CPU. 768 training videos (96 per class), batch 8, partial BN.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from istpan.data.tools import synth
from istpan.errors import UserError
from istpan.experiments.pretrained_ablation import pretrained_rows
from istpan.experiments.runs import Budget, synth_config

__all__ = ["FINETUNE", "FINETUNE_ROWS", "QUICK_FINETUNE", "FinetuneSetup", "format_finetune", "run_finetune"]

FINETUNE_ROWS = ("TSN average consensus", "pyramid attention N=3", "single scale (N=1)",
                 "N=3 + both losses (β=0.1, γ=0.01)", "N=3 + time order (ours)")


@dataclass(frozen=True)
class FinetuneSetup:
    """Budget and recipe of the fine-tuned rows (the JSON records it; resuming needs the same)."""

    epochs: int = 8
    lr: float = 1e-3  # the new layers (attention, head)
    backbone_lr_mult: float = 0.01  # the pretrained backbone at lr x this (0.1: stuck at one class, measured)
    warmup_epochs: float = 0.5
    batch_size: int = 8
    train_segments: int = 4  # K while training ...
    test_segments: int = 8  # ... and for the curve and the final evaluation
    train_per_class: int | None = 96  # 768 training videos (what fits 3 seeds x 5 rows in ~80 min here)
    curve_per_class: int | None = 32  # the per-epoch validation curve: 256 videos
    final_per_class: int | None = None  # the final evaluation of the last checkpoint: every validation video
    threads: int = 1  # torch threads per process


FINETUNE = FinetuneSetup()
QUICK_FINETUNE = FinetuneSetup(epochs=2, batch_size=4, train_per_class=1, curve_per_class=1, final_per_class=2)


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


def _run_one(job: tuple[Any, int, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """Train one row with one seed through `istpan train`'s loop, then score its last checkpoint on the final set."""
    from istpan.experiments.runs import test_model
    from istpan.files.load import load_model
    from istpan.training.train import train

    row, seed, ctx = job
    s: FinetuneSetup = ctx["setup"]
    torch.set_num_threads(s.threads)
    spec = ctx["spec"]
    budget = Budget(num_videos=spec["num_videos"], size=spec["size"], num_frames=spec["num_frames"],
                    epochs=s.epochs, batch_size=s.batch_size, segments=s.test_segments, lr=s.lr, num_workers=0)
    cfg = synth_config(ctx["root"], model=f"{row.family}_mobilenetv2", budget=budget, seed=seed,
                       out_dir=Path(ctx["out"]) / "runs" / f"seed{seed}" / "".join(c if c.isalnum() else "_"
                                                                                  for c in row.name),
                       options=row.options, beta=row.beta, gamma=row.gamma)
    cfg.model.pretrained = str(ctx["pretrained"])
    cfg.train.partial_bn = True  # the paper's (TSN's) fine-tuning recipe
    cfg.train.num_threads = s.threads
    cfg.data.num_frames = s.train_segments
    cfg.data.train_annotations, cfg.data.val_annotations = ctx["train_list"], ctx["curve_list"]
    cfg.optim.backbone_lr_mult, cfg.optim.warmup_epochs = s.backbone_lr_mult, s.warmup_epochs
    start = time.perf_counter()
    res = train(cfg, resume="auto", progress=False)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    model, _ = load_model(res["last_checkpoint"])
    cfg.data.val_annotations = ctx["final_list"]
    final = test_model(model, cfg, test_num_frames=s.test_segments, val_list=ctx["final_list"], with_correct=True)
    history = res.get("history", [])
    return row.name, dict(
        seed=seed, top1=final["top1"], top1_pairs_merged=final["top1_pairs_merged"], correct=final["correct"],
        curve=[h.get("val_top1") for h in history], train_loss=[h.get("train_loss") for h in history],
        train_s=train_s, eval_s=time.perf_counter() - start, num_final=final["num_videos"],
    )


def _run_all(jobs: list, processes: int):
    if processes <= 1 or len(jobs) <= 1:
        yield from map(_run_one, jobs)
        return
    import multiprocessing as mp

    # forked workers, one run each at a time: on a small CPU two 1-thread runs beat one 2-thread run (docs/ablation.md)
    with mp.get_context("fork").Pool(processes, maxtasksperchild=1) as pool:
        yield from pool.imap_unordered(_run_one, jobs)


def run_finetune(
    out_dir: str | Path,
    *,
    data_root: str | Path,
    pretrained: str | Path,
    rows: tuple[str, ...] | None = None,
    seeds: int = 3,
    setup: FinetuneSetup = FINETUNE,
    processes: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune each row, seed-major (every row's seed 0 first), and write finetune.json / finetune.md after each
    run: final top-1 on the final set with its intervals and paired differences, the per-epoch curve, seconds. A rerun
    with the same setup skips the finished runs and resumes a cut one from its last checkpoint."""
    from istpan.experiments.pretrained_report import summarise

    out, root = Path(out_dir), Path(data_root)
    if not (root / "ground_truth.json").is_file():
        raise UserError(f"{root}: no cluttered dataset here; run --regime pretrained with the same --cache first")
    if not Path(pretrained).is_file():
        raise UserError(f"{pretrained}: ImageNet MobileNetV2 weights not found (--weights takes a local file)")
    every = {r.name: r for r in pretrained_rows()}
    table = [every[n] for n in FINETUNE_ROWS if not rows or any(n.startswith(p) for p in rows)]
    if not table:
        raise UserError(f"--only {' '.join(rows or ())}: no fine-tuned row starts with that "
                        f"({', '.join(FINETUNE_ROWS)})")
    out.mkdir(parents=True, exist_ok=True)
    spec = synth.load_ground_truth(root)["spec"]
    ctx = dict(setup=setup, spec=spec, root=str(root), out=str(out), pretrained=str(pretrained),
               train_list=str(_subset(root, "train", setup.train_per_class, out)),
               curve_list=str(_subset(root, "val", setup.curve_per_class, out)),
               final_list=str(_subset(root, "val", setup.final_per_class, out)))
    json_path = out / "finetune.json"
    setup_json = {**asdict(setup), "data": str(root), "data_spec": spec}
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in FINETUNE_ROWS}
    timing: dict[str, float] = {}
    if json_path.is_file():
        old = json.loads(json_path.read_text())
        if old.get("setup") == setup_json:
            for r in old.get("rows", []):
                runs[r["name"]] = list(r.get("per_seed", []))
            timing = old.get("timing", {})

    def write() -> dict[str, Any]:
        ordered = [every[n] for n in FINETUNE_ROWS]
        done = [r for r in ordered if runs[r.name]]
        num_final = max((m["num_final"] for rs in runs.values() for m in rs), default=0)
        result = summarise(ordered, runs, setup=setup_json, seeds=seeds, timing=timing, num_val=num_final,
                           num_train=len(Path(ctx["train_list"]).read_text().split()) // 2)
        result["regime"] = ("fine-tuned (ImageNet MobileNetV2, partial BN, istpan train's loop), cluttered scene, "
                            f"synth version {spec.get('version')}")
        for entry in result["rows"]:  # the video bootstrap of each seed on its own, beside the pooled one
            for ref, key in (("TSN average consensus", "vs_tsn"), ("pyramid attention N=3", "vs_n3")):
                if runs[ref] and entry["name"] != ref:
                    entry[f"{key}_bootstrap_per_seed"] = _per_seed_boot(runs[entry["name"]], runs[ref])
        result["rows_done"] = [r.name for r in done]
        json_path.write_text(json.dumps(result, indent=1))
        (out / "finetune.md").write_text(format_finetune(result))
        return result

    result = write()
    jobs = [(row, seed, ctx) for seed in range(seeds) for row in table
            if not any(m["seed"] == seed for m in runs[row.name])]
    start = time.perf_counter()
    for i, (name, metrics) in enumerate(_run_all(jobs, processes)):
        runs[name].append(metrics)
        timing["wall_s"] = timing.get("wall_s", 0.0) + time.perf_counter() - start
        start = time.perf_counter()
        if progress:
            curve = " ".join(f"{v:.1f}" for v in metrics["curve"] if v is not None)
            print(f"[{i + 1}/{len(jobs)}] seed {metrics['seed']}: {name}: top-1 {metrics['top1']:.1f} "
                  f"(curve {curve}; {metrics['train_s'] / 60:.1f} min)", flush=True)
        result = write()
    return result


def _per_seed_boot(a: list[dict], b: list[dict]) -> dict[int, dict[str, float]]:
    from istpan.experiments.stats import bootstrap_paired

    by_b = {m["seed"]: m["correct"] for m in b}
    out = {}
    for m in sorted(a, key=lambda m: m["seed"]):
        if m["seed"] in by_b:
            ca, cb = (torch.tensor([[c == "1" for c in s]]) for s in (m["correct"], by_b[m["seed"]]))
            out[m["seed"]] = bootstrap_paired(ca, cb)
    return out


def format_finetune(result: dict[str, Any]) -> str:
    """The frozen table's Markdown (pretrained_report.format_markdown) under this recipe's header, then every run:
    its top-1, its own paired differences with the video bootstrap, and its curve."""
    from istpan.experiments.pretrained_report import format_markdown

    lines = ["", "Every run (final top-1 on the final set; Δ with the video bootstrap of that seed alone, 95 %; "
             "validation top-1 after each epoch; training minutes):", "",
             "| row | seed | top-1 % | Δ vs TSN | Δ vs N=3 | curve | train min |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in result["rows"]:
        for m in row["per_seed"]:
            boots = [row.get(f"{k}_bootstrap_per_seed", {}).get(m["seed"]) or
                     row.get(f"{k}_bootstrap_per_seed", {}).get(str(m["seed"])) for k in ("vs_tsn", "vs_n3")]
            text = ["–" if b is None else f"{b['mean']:+.1f} [{b['lo']:+.1f}, {b['hi']:+.1f}]" for b in boots]
            curve = " / ".join(f"{v:.1f}" for v in m["curve"] if v is not None)
            lines.append(f"| {row['name']} | {m['seed']} | {m['top1']:.1f} | {text[0]} | {text[1]} | {curve} | "
                         f"{m['train_s'] / 60:.1f} |")
    return format_markdown(result, header=_header(result)) + "\n".join(lines) + "\n"


def _header(result: dict[str, Any]) -> list[str]:
    s = result["setup"]
    minutes = result.get("timing", {}).get("wall_s", 0.0) / 60
    return [
        f"Regime: {result['regime']}. {result['num_train']} train videos; per-epoch curve on "
        f"{(s['curve_per_class'] or 0) * len(synth.CLASSES) or 'all'} validation videos, final top-1 of the last "
        f"checkpoint on {result['num_val']} validation videos. Per run {s['epochs']} epochs, batch {s['batch_size']}, "
        f"train K = {s['train_segments']}, test K = {s['test_segments']}, AdamW lr {s['lr']:g} (backbone x "
        f"{s['backbone_lr_mult']:g}), warm-up {s['warmup_epochs']:g} epoch + cosine, partial BN; {result['seeds']} "
        f"seeds. Mean [95 % CI over seeds]; Δ = paired difference on the same seeds and videos. Chance "
        f"{result['chance']:.1f} %.",
        f"Time (wall, all runs): {minutes:.1f} min.",
    ]
