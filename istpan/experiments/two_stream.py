"""RGB vs flow vs late fusion vs feature fusion on the synthetic data, for the paper's layer and for TSN.

    python -m istpan.experiments.two_stream --out runs/two_stream --seeds 3          # docs/flow.md's table

Per seed: a fresh synthetic dataset (seed 1000 + s, as the ablation), its flow computed once with DIS (the fast
algorithm; `istpan data flow`'s code), then for each model (`istpan_tiny`, `tsn_tiny`) three trainings with the same
budget and seed: modality rgb, flow (K stacks of L = 5 flow frames), rgb+flow (feature fusion: one IST-PAN layer over
both streams' pyramids, or TSN's consensus over the concatenated features); late fusion is the rgb and flow models'
probabilities fused 1 : 1.5 (TSN's weights, evaluation/fusion.py). Reported on the validation videos: top-1, top-1
on the videos of the time-reversal pairs (move left/right, grow/shrink, rotate cw/ccw: an order-blind RGB model is at
chance within each pair), the accuracy within the pair (right among the pair videos predicted as one of their
pair's two classes: 50 % for an order-blind model) and top-1 with each pair merged into one class.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import torch

from istpan.data.tools import synth
from istpan.data.tools.synth import CLASSES, REVERSAL_PAIRS
from istpan.experiments.runs import Budget, _val_loader, pair_merged_top1, synth_config, train_variant

__all__ = ["STUDY", "pair_class_top1", "run_study", "within_pair_accuracy"]

STUDY = Budget(num_videos=384, size=64, num_frames=32, epochs=6)  # the ablation's budget
MODELS = ("istpan_tiny", "tsn_tiny")
MODALITIES = ("rgb", "flow", "rgb+flow")
ROW_OF = {"rgb": "rgb", "flow": "flow", "rgb+flow": "feature fusion"}
ROWS = ("rgb", "flow", "late fusion", "feature fusion")


def pair_class_top1(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 (percent) on the videos whose class belongs to a time-reversal pair."""
    paired = {CLASSES.index(c) for pair in REVERSAL_PAIRS for c in pair}
    mask = torch.tensor([int(y) in paired for y in labels.tolist()])
    if not mask.any():
        return float("nan")
    return 100.0 * float((scores[mask].argmax(1) == labels[mask]).float().mean())


def within_pair_accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Percent right among reversal-pair videos predicted as one of their pair's two classes: 50 for a model blind
    to the direction of time, 100 when it always tells the pair apart."""
    partner = {CLASSES.index(a): CLASSES.index(b) for pair in REVERSAL_PAIRS for a, b in (pair, pair[::-1])}
    pred, hits, total = scores.argmax(1).tolist(), 0, 0
    for p, y in zip(pred, labels.tolist()):
        if y in partner and p in (y, partner[y]):
            total, hits = total + 1, hits + (p == y)
    return 100.0 * hits / total if total else float("nan")


def _metrics(scores: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    return {
        "top1": 100.0 * float((scores.argmax(1) == labels).float().mean()),
        "top1_reversal_pairs": pair_class_top1(scores, labels),
        "within_pair": within_pair_accuracy(scores, labels),
        "top1_pairs_merged": pair_merged_top1(scores, labels),
    }


def _one_seed(out: Path, seed: int, budget: Budget, *, algorithm: str, progress: bool,
              rescore: bool = False) -> dict[str, dict]:
    from istpan.data.tools.flow import FlowJob, extract_flow, flow_folder
    from istpan.data.video_dataset import load_split
    from istpan.evaluation.evaluate import evaluate
    from istpan.evaluation.fusion import TSN_FLOW_WEIGHTS, fused_metrics

    data = synth.generate(out / f"data_seed{seed}", seed=1000 + seed, num_videos=budget.num_videos,
                          size=budget.size, num_frames=budget.num_frames, progress=progress)
    flow_root = out / f"flow_seed{seed}"
    probe = synth_config(data, model=MODELS[0], out_dir=out / "probe", budget=budget)
    probe.data.val_annotations = str(Path(data) / "val.txt")
    videos = [r.path for s in ("train", "val") for r in load_split(probe.data, s).records]
    jobs = [FlowJob(v, str(flow_folder(v, root=probe.data.root, out=flow_root))) for v in videos]
    extract_flow(jobs, algorithm=algorithm, short_side=None, workers=2, progress=progress)

    rows: dict[str, dict] = {}
    for model in MODELS:
        results = {}
        for modality in MODALITIES:
            run_dir = out / f"seed{seed}" / f"{model}_{modality.replace('+', '_')}"
            cfg = synth_config(data, model=model, out_dir=run_dir, budget=budget, seed=seed)
            cfg.data.modality, cfg.data.flow_root = modality, str(flow_root)
            if rescore and (run_dir / "last.pt").is_file():  # score the trained model again, no training
                from istpan.files.load import load_model

                net, seconds = load_model(run_dir / "last.pt")[0], float("nan")
            else:
                net, _, seconds = train_variant(cfg, progress=progress)
            res = evaluate(net, _val_loader(cfg), multi_label=False, return_scores=True)
            results[modality] = res
            rows[f"{model} {ROW_OF[modality]}"] = {**_metrics(res["scores"], res["labels"]), "train_s": seconds}
        late = fused_metrics([results["rgb"], results["flow"]], TSN_FLOW_WEIGHTS, multi_label=False)
        rows[f"{model} late fusion"] = _metrics(late["scores"], late["labels"])
    return rows


def run_study(out: str | Path, *, seeds: int = 3, budget: Budget = STUDY, algorithm: str = "dis",
              progress: bool = True, rescore: bool = False) -> dict[str, Any]:
    """Train every (model, modality) for each seed; write results.json and table.md under `out`; resumable per seed.

    rescore: recompute every metric from the checkpoints already under `out` (training times are kept)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    per_seed: dict[str, dict] = json.loads(path.read_text())["per_seed"] if path.is_file() else {}
    for seed in range(seeds):
        if str(seed) not in per_seed or rescore:
            old = per_seed.get(str(seed), {})
            rows = _one_seed(out, seed, budget, algorithm=algorithm, progress=progress, rescore=rescore)
            for key, row in rows.items():  # training times of the original runs
                if "train_s" in old.get(key, {}) and row.get("train_s") != row.get("train_s"):
                    row["train_s"] = old[key]["train_s"]
            per_seed[str(seed)] = rows
            path.write_text(json.dumps({"per_seed": per_seed, "budget": budget.__dict__}, indent=1))
    table = summarise(per_seed)
    (out / "table.md").write_text(table)
    return {"per_seed": per_seed, "table": table}


def summarise(per_seed: dict[str, dict]) -> str:
    """Markdown table: mean ± std over seeds of each metric, one row per (model, input)."""
    metrics = ("top1", "top1_reversal_pairs", "within_pair", "top1_pairs_merged")
    lines = [f"| model | input | {' | '.join(m.replace('_', ' ') for m in metrics)} |",
             "| --- | --- |" + " --- |" * len(metrics)]
    for model in MODELS:
        for row in ROWS:
            values = [seed_rows[f"{model} {row}"] for seed_rows in per_seed.values()]
            cells = []
            for m in metrics:
                xs = [v[m] for v in values]
                sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
                cells.append(f"{statistics.mean(xs):.1f} ± {sd:.1f}")
            lines.append(f"| {model} | {row} | {' | '.join(cells)} |")
    return "\n".join(lines) + f"\n\n{len(per_seed)} seeds; mean ± std.\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/two_stream")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=STUDY.epochs)
    p.add_argument("--num-videos", type=int, default=STUDY.num_videos)
    p.add_argument("--algorithm", default="dis", choices=["tvl1", "dis", "farneback"])
    p.add_argument("--rescore", action="store_true", help="recompute the metrics from the checkpoints under --out")
    args = p.parse_args()
    torch.set_num_threads(1)
    budget = Budget(**{**STUDY.__dict__, "epochs": args.epochs, "num_videos": args.num_videos})
    print(run_study(args.out, seeds=args.seeds, budget=budget, algorithm=args.algorithm, progress=False,
                    rescore=args.rescore)["table"])


if __name__ == "__main__":
    main()
