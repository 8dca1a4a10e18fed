"""`istpan ablate`: the paper's ablation table, reproduced on the synthetic dataset with one budget for every row.

Rows (mean ± std over seeds; every row is trained from scratch with the same data, budget and seed list):

    TSN average consensus                       tsn_tiny
    single-scale attention                      N = 1, β = γ = 0
    pyramid attention N = 2 / N = 3             β = γ = 0
    + l_interactive                             N = 3, β
    + l_attn  (the full model)                  N = 3, β, γ
    R = max / bilinear / strided                full model, other down-sampling (avg is the full model's)
    F = sum / max / learned                     full model, other fusion (mean is the full model's)
    d = 4, β × 10, γ × 10                       full model, fewer glimpses (default d = h·w), heavier losses
    trained K = 8, tested K = 3 / 8 / 16 / 25   the full model's checkpoints, re-tested (no retraining)
    untrimmed: TSN / full model                 trained and tested on the untrimmed variant

Beside top-1 every attention row reports the glimpse redundancy (mean off-diagonal |A Aᵀ|), which is what
l_interactive is meant to lower. Each row also reports top-1 with the time-reversal pairs merged: the synthetic
classes contain three such pairs, which no frame-order-blind model can separate.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from istpan.data.tools import synth
from istpan.errors import UserError
from istpan.experiments.runs import Budget, order_blind_ceiling, synth_config, test_model, train_variant

__all__ = ["ABLATION", "QUICK_ABLATION", "Row", "format_markdown", "rows", "run_ablation"]

ABLATION = Budget(num_videos=384, size=64, num_frames=32, epochs=6)
QUICK_ABLATION = Budget(num_videos=24, size=32, num_frames=8, epochs=1, batch_size=4, segments=4, num_workers=0)
TEST_K = (3, 8, 16, 25)


@dataclass(frozen=True)
class Row:
    """One trained configuration of the table."""

    name: str
    model: str = "istpan_tiny"
    options: dict[str, Any] = field(default_factory=dict)
    beta: float = 0.1
    gamma: float = 0.01
    untrimmed: bool = False
    test_k: tuple[int, ...] = ()  # extra test-time K for this row's checkpoints


def rows(*, beta: float = 0.1, gamma: float = 0.01) -> list[Row]:
    full = dict(num_scales=3, reduce="avg", fuse="mean")
    ours = {**full, "time_encoding": "fourier", "head": "glimpse"}
    return [
        Row("TSN average consensus", model="tsn_tiny", beta=0.0, gamma=0.0),
        Row("single-scale attention (N=1)", model="istpan_single_tiny", beta=0.0, gamma=0.0),
        Row("pyramid attention N=2", options={**full, "num_scales": 2}, beta=0.0, gamma=0.0),
        Row("pyramid attention N=3", options=full, beta=0.0, gamma=0.0),
        Row("N=3 + l_interactive", options=full, beta=beta, gamma=0.0),
        Row("N=3 + l_interactive + l_attn (full)", options=full, beta=beta, gamma=gamma, test_k=TEST_K),
        *[
            Row(f"full, R={r}", options={**full, "reduce": r}, beta=beta, gamma=gamma)
            for r in ("max", "bilinear", "strided")
        ],
        *[Row(f"full, F={f}", options={**full, "fuse": f}, beta=beta, gamma=gamma) for f in ("sum", "max", "learned")],
        Row("full, d=4", options={**full, "d": 4}, beta=beta, gamma=gamma),
        Row(f"full, β={beta * 10:g}", options=full, beta=beta * 10, gamma=gamma),
        Row(f"full, γ={gamma * 10:g}", options=full, beta=beta, gamma=gamma * 10),
        Row("untrimmed: TSN", model="tsn_tiny", beta=0.0, gamma=0.0, untrimmed=True),
        Row("untrimmed: full", options=full, beta=beta, gamma=gamma, untrimmed=True),
        Row("untrimmed: N=3", options=full, beta=0.0, gamma=0.0, untrimmed=True),
        # Ours, not the paper's: order-aware scores + a head that keeps the glimpses apart (docs/models.md).
        Row("N=3 + time order (ours)", options=ours, beta=0.0, gamma=0.0, test_k=TEST_K),
        Row("N=3 + time order + l_interactive + l_attn (ours)", options=ours, beta=beta, gamma=gamma),
        Row("untrimmed: N=3 + time order (ours)", options=ours, beta=0.0, gamma=0.0, untrimmed=True),
    ]


def _mean_std(values: list[float]) -> dict[str, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def _datasets(out: Path, budget: Budget, seed: int, *, progress: bool) -> dict[bool, Path]:
    common = dict(
        seed=1000 + seed,
        num_videos=budget.num_videos,
        size=budget.size,
        num_frames=budget.num_frames,
        progress=progress,
    )
    return {
        False: synth.generate(out / f"data_seed{seed}", **common),
        True: synth.generate(out / f"data_untrimmed_seed{seed}", untrimmed=True, **common),
    }


def _previous_runs(path: Path, *, budget: Budget, beta: float, gamma: float) -> dict[str, list[dict[str, Any]]]:
    """Per-seed results of an earlier run of the same budget in the same folder (to resume or add rows)."""
    if not path.is_file():
        return {}
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}
    same = old.get("budget") == json.loads(json.dumps(budget.__dict__)) and (old.get("beta"), old.get("gamma")) == (
        beta,
        gamma,
    )
    return {r["name"]: list(r.get("per_seed", [])) for r in old.get("rows", [])} if same else {}


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_").lower()


def run_ablation(
    out_dir: str | Path,
    *,
    seeds: int = 3,
    budget: Budget = ABLATION,
    progress: bool = True,
    only: list[str] | None = None,
    beta: float = 0.1,
    gamma: float = 0.01,
) -> dict[str, Any]:
    """Train every row for every seed into out_dir; write ablation.json and ablation.md there and return the json.

    Each seed has its own generated dataset (so the spread covers data as well as initialisation). Results are
    written after every run, and a rerun into the same folder with the same budget skips the (row, seed) pairs
    already measured: an interrupted ablation resumes, and new rows can be added. `only` selects rows by name prefix.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    every = rows(beta=beta, gamma=gamma)
    table = [r for r in every if not only or any(r.name.startswith(o) for o in only)]
    if not table:
        raise UserError(f"--only {' '.join(only or [])}: no ablation row starts with that")
    previous = _previous_runs(out / "ablation.json", budget=budget, beta=beta, gamma=gamma)
    runs: dict[str, list[dict[str, Any]]] = {r.name: previous.get(r.name, [])[:seeds] for r in every}
    result = _summarise(every, runs, budget=budget, seeds=seeds, beta=beta, gamma=gamma)
    for seed in range(seeds):
        todo = [r for r in table if len(runs[r.name]) <= seed]
        data = _datasets(out, budget, seed, progress=progress) if todo else {}
        for i, row in enumerate(todo):
            if progress:
                print(f"== seed {seed + 1}/{seeds}, row {i + 1}/{len(todo)}: {row.name} ==", flush=True)
            cfg = synth_config(
                data[row.untrimmed],
                model=row.model,
                out_dir=out / "runs" / f"seed{seed}" / _slug(row.name),
                budget=budget,
                seed=seed,
                options=row.options,
                beta=row.beta,
                gamma=row.gamma,
            )
            model, _, seconds = train_variant(cfg, progress=False)
            metrics = test_model(model, cfg, redundancy=True)
            metrics["train_s"] = seconds
            for k in row.test_k:
                metrics[f"top1_test_k{k}"] = test_model(model, cfg, test_num_frames=k)["top1"]
            runs[row.name].append(metrics)
            result = _summarise(every, runs, budget=budget, seeds=seeds, beta=beta, gamma=gamma)
            (out / "ablation.json").write_text(json.dumps(result, indent=2))
            (out / "ablation.md").write_text(format_markdown(result))
    return result


def _summarise(
    table: list[Row], runs: dict[str, list[dict]], *, budget: Budget, seeds: int, beta: float, gamma: float
) -> dict[str, Any]:
    summary = []
    for row in table:
        got = runs[row.name]
        if not got:
            continue
        keys = sorted({k for m in got for k in m if isinstance(m[k], (int, float))})
        summary.append(
            {
                "name": row.name,
                "model": row.model,
                "options": row.options,
                "beta": row.beta,
                "gamma": row.gamma,
                "untrimmed": row.untrimmed,
                "seeds_done": len(got),
                **{k: _mean_std([m.get(k) for m in got]) for k in keys if k not in ("num_videos", "skipped")},
                "per_seed": got,
            }
        )
    return {
        "budget": budget.__dict__,
        "seeds": seeds,
        "beta": beta,
        "gamma": gamma,
        "classes": synth.CLASSES,
        "chance": 100.0 / len(synth.CLASSES),
        "order_blind_ceiling": order_blind_ceiling(),
        "rows": summary,
    }


def _pm(stat: dict[str, float] | None, digits: int = 1) -> str:
    if not stat or not stat.get("n"):
        return "–"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def format_markdown(result: dict[str, Any]) -> str:
    """The table as Markdown: top-1, top-1 with reversal pairs merged, redundancy, and the test-K columns."""
    b = result["budget"]
    lines = [
        f"Synthetic set: {b['num_videos']} videos of {b['size']}² px, {b['num_frames']} frames; "
        f"{b['epochs']} epochs, batch {b['batch_size']}, K = {b['segments']}, AdamW lr {b['lr']}; "
        f"β = {result['beta']}, γ = {result['gamma']}; mean ± std over {result['seeds']} seeds. "
        f"Chance {result['chance']:.1f} %, frame-order-blind ceiling {result['order_blind_ceiling']:.1f} %.",
        "",
        "| row | top-1 % | top-1, reversal pairs merged % | glimpse redundancy | train s | seeds |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['name']} | {_pm(r.get('top1'))} | {_pm(r.get('top1_pairs_merged'))} | "
            f"{_pm(r.get('redundancy'), 3)} | {_pm(r.get('train_s'), 0)} | {r['seeds_done']} |"
        )
    k_rows = [r for r in result["rows"] if any(k.startswith("top1_test_k") for k in r)]
    for r in k_rows:
        ks = sorted(int(k.removeprefix("top1_test_k")) for k in r if k.startswith("top1_test_k"))
        lines += [
            "",
            f"Any number of frames ({r['name']}, trained with K = {b['segments']}):",
            "",
            "| test K | " + " | ".join(str(k) for k in ks) + " |",
            "| --- |" + " --- |" * len(ks),
            "| top-1 % | " + " | ".join(_pm(r.get(f"top1_test_k{k}")) for k in ks) + " |",
        ]
    return "\n".join(lines) + "\n"
