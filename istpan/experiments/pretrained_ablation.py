"""`istpan ablate --regime pretrained`: the paper's ablation with an ImageNet MobileNetV2 on the cluttered scene.

The paper's regime is a pretrained 2D backbone on footage where the action is a small part of a busy frame. Here:
the `cluttered` synthetic scene (data/tools/synth_scenes.py) at 112 px, the ImageNet MobileNetV2 frozen, its stage
maps computed once per frame and cached (istpan/experiments/features.py), and every row trains only the IST-PAN
layer + head on the cache (istpan/experiments/cached.py), for ≥ 5 seeds on one dataset with ≥ 1,000 validation
videos. Each row × seed is paired with TSN and with N = 3 on the same seed (same data order, frame sampling and
validation videos), and the differences get 95 % intervals (istpan/experiments/stats.py).

Results are written after every row × seed (`pretrained_ablation.json` / `.md`), seed-major, so an interrupted run
leaves every row with the seeds done so far, and a rerun with the same setup resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from istpan.data.tools import synth
from istpan.errors import UserError
from istpan.experiments.cached import CachedBudget, FrameFeatures, build_cached_model, predict_cached, train_cached
from istpan.experiments.features import FeatureCache, extract_features

__all__ = ["PRETRAINED", "QUICK_PRETRAINED", "PRow", "PretrainedSetup", "pretrained_rows", "run_pretrained_ablation"]

TSN, N3 = "TSN average consensus", "pyramid attention N=3"
ANY_K = tuple(range(1, 26))


@dataclass(frozen=True)
class PretrainedSetup:
    """The data, cache and budget of the pretrained ablation (the JSON records it; resuming needs the same)."""

    num_videos: int = 4096  # 3,072 train + 1,024 val generated (one validation video = 0.1 point)
    size: int = 112
    num_frames: int = 32
    data_seed: int = 13
    train_per_class: int = 128  # train videos per class (1,024 of the 3,072 generated: CPU time on a shared machine)
    train_frame_step: int = 4  # train cache: every 4th frame (8 per video)
    anyk_per_class: int = 16  # validation videos per class cached at every frame, for the any-K curve
    budget: CachedBudget = field(default_factory=CachedBudget)


PRETRAINED = PretrainedSetup()
QUICK_PRETRAINED = PretrainedSetup(num_videos=64, size=64, num_frames=8, train_per_class=6, train_frame_step=2,
                                   anyk_per_class=2,
                                   budget=CachedBudget(epochs=2, batch_size=8, segments=4, input_size=64))


@dataclass(frozen=True)
class PRow:
    """One trained configuration: model family (tsn / istpan / istpan_single), layer options, loss weights."""

    name: str
    family: str = "istpan"
    options: dict[str, Any] = field(default_factory=dict)
    beta: float = 0.0
    gamma: float = 0.0
    any_k: bool = False  # also test at K = 1…25 (no retraining)
    localise: bool = True  # pointing game on the actor's boxes
    core: bool = False  # a row a claim of the paper is judged on: all its seeds run before the other rows


def pretrained_rows(*, beta: float = 0.1, gamma: float = 0.01) -> list[PRow]:
    """The table. Every variant is N = 3 without the losses except in the one thing it changes, so its paired
    difference to "N=3" is that thing's effect; β and γ are the paper's (normalised losses, docs/models.md)."""
    n3 = dict(num_scales=3, reduce="avg", fuse="mean")
    ours = {**n3, "time_encoding": "fourier", "head": "glimpse"}
    return [  # in the order they run within a seed: the claims' rows first, so a cut run still answers them
        PRow(TSN, family="tsn", any_k=True, localise=False, core=True),
        PRow(N3, options=n3, any_k=True, core=True),
        PRow("single scale (N=1)", family="istpan_single", core=True),
        PRow("pyramid attention N=2", options={**n3, "num_scales": 2}, core=True),
        PRow(f"N=3 + l_interactive (β={beta:g})", options=n3, beta=beta, core=True),
        PRow(f"N=3 + l_attn (γ={gamma:g})", options=n3, gamma=gamma, core=True),
        PRow(f"N=3 + both losses (β={beta:g}, γ={gamma:g})", options=n3, beta=beta, gamma=gamma, core=True),
        # Ours, not the paper's: order-aware scores + the glimpse head (docs/models.md)
        PRow("N=3 + time order (ours)", options=ours, any_k=True, core=True),
        # What would have to change for a claim that fails (docs/ablation.md): keep the glimpses apart in the head.
        PRow("N=3, head=glimpse", options={**n3, "head": "glimpse"}, core=True),
        *[PRow(f"N=3, R={r}", options={**n3, "reduce": r}) for r in ("max", "bilinear", "strided")],
        *[PRow(f"N=3, F={f}", options={**n3, "fuse": f}) for f in ("sum", "max", "learned")],
        PRow("N=3, d=4", options={**n3, "d": 4}),
        *[PRow(f"N=3 + l_interactive, β={b:g}", options=n3, beta=b) for b in (beta / 10, beta * 10)],
        *[PRow(f"N=3 + l_attn, γ={c:g}", options=n3, gamma=c) for c in (gamma / 10, gamma * 10)],
    ]


def prepare_data(out: Path, setup: PretrainedSetup, *, pretrained: str | Path, workers: int, progress: bool
                 ) -> tuple[dict[str, FeatureCache], dict[str, float]]:
    """Generate the cluttered dataset and cache the frozen backbone's features (both reused when already there):
    `train` (train_per_class videos per class, every train_frame_step-th frame), `val` (every validation video at
    the K test positions) and `val_anyk` (anyk_per_class validation videos per class, every frame)."""
    from istpan.data.sampling import segment_indices

    timing: dict[str, float] = {}
    start = time.perf_counter()
    root = synth.generate(out / "data", seed=setup.data_seed, num_videos=setup.num_videos, size=setup.size,
                          num_frames=setup.num_frames, scene="cluttered", workers=workers, progress=progress)
    timing["generate_s"] = time.perf_counter() - start
    jobs = {
        "val": ("val", segment_indices(setup.num_frames, setup.budget.segments).tolist(), None),
        "train": ("train", list(range(0, setup.num_frames, setup.train_frame_step)), setup.train_per_class),
        # (a cache made with more videos per class serves too: FeatureCache.first_per_class)
        "val_anyk": ("val", None, setup.anyk_per_class),
    }
    caches = {}
    for name, (split, frames, per_class) in jobs.items():
        start = time.perf_counter()
        extract_features(root, split, out / "features" / name, pretrained=pretrained, frames=frames,
                         per_class=per_class, progress=progress)
        timing[f"features_{name}_s"] = time.perf_counter() - start
        caches[name] = FeatureCache.load(out / "features" / name)
    return caches, timing


def _pointing(heat: torch.Tensor, boxes: torch.Tensor) -> dict[str, float]:
    """Pointing game (%) over every sampled frame with a visible actor, and its chance level (a random cell)."""
    from istpan.evaluation.localization import pointing_game
    from istpan.experiments.synth_eval import pointing_chance

    hits = chance = frames = 0.0
    h, w = heat.shape[-2:]
    for v in range(heat.shape[0]):
        for k in range(heat.shape[1]):
            box = boxes[v, k]
            if torch.isnan(box).any():
                continue
            hits += pointing_game(heat[v, k], box.tolist())
            chance += pointing_chance(h, w, box.tolist())
            frames += 1
    return {"pointing_game": 100.0 * hits / max(frames, 1), "pointing_chance": 100.0 * chance / max(frames, 1)}


def run_row(row: PRow, seed: int, caches: dict[str, FrameFeatures], budget: CachedBudget, *,
            progress: bool = False) -> dict[str, Any]:
    """Train one row with one seed and measure it: top-1 (last epoch), pairs merged, the validation curve, which
    videos it got right, glimpse redundancy, pointing game and (any_k rows) top-1 at test K = 1…25. caches: the
    train / val / val_anyk frame features (R = avg; rows with another R are computed from their stage maps)."""
    from istpan.experiments.runs import pair_merged_top1

    train, val = caches["train"], caches["val"]
    model = build_cached_model(row.family, row.options, num_classes=len(synth.CLASSES), budget=budget, seed=seed)
    fit = train_cached(model, train, val, budget=budget, beta=row.beta, gamma=row.gamma, seed=seed,
                       progress=progress)
    pred = predict_cached(model, val, segments=budget.segments, with_attention=row.localise)
    correct = pred["scores"].argmax(1) == val.cache.labels  # (V,)
    m: dict[str, Any] = {
        "seed": seed,
        "top1": 100.0 * float(correct.float().mean()),
        "top1_pairs_merged": pair_merged_top1(pred["scores"], val.cache.labels),
        "train_s": fit["train_s"],
        "curve": fit["curve"],
        "correct": "".join("1" if c else "0" for c in correct.tolist()),
    }
    if "heat" in pred:
        m["redundancy"] = float(pred["redundancy"].mean())
        m.update(_pointing(pred["heat"], val.cache.boxes[:, pred["positions"]]))
    if row.any_k:  # on the videos cached at every frame, each K sampled by the test protocol
        anyk = caches["val_anyk"]
        for k in ANY_K:
            scores = predict_cached(model, anyk, segments=k)["scores"]
            m[f"top1_k{k}"] = 100.0 * float((scores.argmax(1) == anyk.cache.labels).float().mean())
    return m


def _setup_json(setup: PretrainedSetup) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(setup)))


def run_pretrained_ablation(
    out_dir: str | Path,
    *,
    pretrained: str | Path,
    cache_dir: str | Path | None = None,
    seeds: int = 5,
    setup: PretrainedSetup = PRETRAINED,
    only: list[str] | None = None,
    beta: float = 0.1,
    gamma: float = 0.01,
    workers: int = 2,
    processes: int = 1,
    caches: dict[str, FeatureCache] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the table into out_dir (pretrained_ablation.json / .md); data and features go to cache_dir (default
    out_dir). TSN and N=3 always run, since every row is compared with them. `workers`: processes generating
    videos; `processes`: rows trained at once (forked, one thread each). `caches`: train / val / val_anyk caches
    already extracted (then no data is generated and no feature computed)."""
    from istpan.experiments.pretrained_report import format_markdown, summarise

    if not Path(pretrained).is_file():
        raise UserError(f"{pretrained}: ImageNet MobileNetV2 weights not found (--weights takes a local file, "
                        "torchvision's mobilenet_v2-b0353104.pth)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    every = pretrained_rows(beta=beta, gamma=gamma)
    table = [r for r in every if not only or any(r.name.startswith(o) for o in only)]
    if not table:
        raise UserError(f"--only {' '.join(only or [])}: no ablation row starts with that")
    table = [r for r in every if r in table or r.name in (TSN, N3)]
    if caches is None:
        caches, timing = prepare_data(Path(cache_dir or out), setup, pretrained=pretrained, workers=workers,
                                      progress=progress)
    else:
        timing = {}
    start = time.perf_counter()
    sources = {name: FrameFeatures(cache) for name, cache in caches.items()}  # once, shared by the forked workers
    timing["frame_features_s"] = time.perf_counter() - start
    json_path = out / "pretrained_ablation.json"
    runs: dict[str, list[dict[str, Any]]] = {r.name: [] for r in every}
    if json_path.is_file():
        old = json.loads(json_path.read_text())
        if old.get("setup") == _setup_json(setup):
            for r in old.get("rows", []):
                if r["name"] in runs:
                    runs[r["name"]] = list(r.get("per_seed", []))
            timing = {**old.get("timing", {}), **timing}

    def write() -> dict[str, Any]:
        result = summarise(every, runs, setup=_setup_json(setup), seeds=seeds, timing=timing,
                           num_val=len(caches["val"]), num_train=len(caches["train"]),
                           num_anyk=len(caches["val_anyk"]))
        json_path.write_text(json.dumps(result, indent=1))
        (out / "pretrained_ablation.md").write_text(format_markdown(result))
        return result

    result = write()
    # core rows first, seed-major (every core row gets seed 0 first), then the others seed-major: a run cut short
    # still has every seed of the rows the verdicts rest on
    todo = [(row, seed) for core in (True, False) for seed in range(seeds) for row in table
            if row.core == core and not any(m["seed"] == seed for m in runs[row.name])]
    start = time.perf_counter()
    for i, (name, metrics) in enumerate(_run_all(todo, sources, setup.budget, processes=processes)):
        runs[name].append(metrics)
        timing["rows_s"] = timing.get("rows_s", 0.0) + time.perf_counter() - start
        start = time.perf_counter()
        if progress:
            print(f"[{i + 1}/{len(todo)}] seed {metrics['seed']}: {name}: top-1 {metrics['top1']:.1f} "
                  f"({metrics['train_s']:.0f} s)", flush=True)
        result = write()
    return result


def _init_worker() -> None:
    torch.set_num_threads(1)  # one thread per process: on a shared CPU, processes scale and threads spin


def _run_one(job: tuple[PRow, int]) -> tuple[str, dict[str, Any]]:
    row, seed = job
    return row.name, run_row(row, seed, _CACHES, _BUDGET)


_CACHES: dict[str, FrameFeatures] = {}
_BUDGET = CachedBudget()


def _run_all(todo: list[tuple[PRow, int]], caches: dict[str, FrameFeatures], budget: CachedBudget, *,
             processes: int):
    """Yield (row name, metrics) as the jobs finish; with processes > 1 in forked workers that share the caches
    (copy-on-write), each with one thread."""
    global _CACHES, _BUDGET
    _CACHES, _BUDGET = caches, budget
    if processes <= 1 or len(todo) <= 1:
        yield from map(_run_one, todo)
        return
    import multiprocessing as mp

    with mp.get_context("fork").Pool(processes, initializer=_init_worker) as pool:
        yield from pool.imap_unordered(_run_one, todo)
