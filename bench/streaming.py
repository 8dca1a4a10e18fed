"""Streaming, shared windows and anytime inference (issue 11): ratios measured in one run.

    .venv/bin/istpan demo --out runs/demo                 # trains the three synthetic models (once)
    .venv/bin/python bench/streaming.py --demo runs/demo --plot docs/img/anytime.png
    .venv/bin/python bench/streaming.py --demo runs/demo --only-anytime      # the anytime part alone (minutes)
    # last line: stream_speedup=... window_passes=... anytime_frames=...

stream_speedup   per-decision time of cached streaming (one frame through the backbone + the layer and head over the
                 ring buffer) vs recomputing the K-frame window (K frames through the backbone + layer + head), for
                 istpan_mobilenetv2 at 112 and 224 px, K = 8, a decision every frame; both on the same normalised
                 frames, timed alternately decision by decision (so machine noise hits both); the median of the
                 per-decision ratios, and the smaller of the two sizes' is reported. Goal >= 5 (the limit is
                 K = 8 minus the layer's own cost and batch 1's lower efficiency per frame).
window_passes    backbone passes per distinct sampled frame for `--window 4 --stride 2` (seconds) on a generated
                 10-minute video (25 fps, 64x48: cheap to generate and decode; the count does not depend on the
                 size). Goal 1.0; recomputing every window costs windows * K / distinct frames (printed, about 2).
anytime_frames   mean frames used by `istpan eval --anytime`'s default rule (the gain rule, loss bound loss + 2 SE
                 <= 1 point of top-1 below fixed K = 8, spread order), calibrated on 10,240 generated videos and
                 measured on 10,240 *other* ones, and the swapped fold, for the paper's layer, TSN and the
                 order-aware model (the demo's three models). The videos: 16 sets of 1,280 from the demo's generator
                 with seeds 3..18 (the demo uses 0 and 1), sets 3..10 calibrate, 11..18 report (--anytime-sets).
                 The largest of the three models and two folds is reported; the held-out loss and its standard
                 error are printed beside each figure, for both rules (gain, margin), both frame orders and the
                 margin rule's point-loss calibration (z = 0, the rule before); also on the demo's own 160
                 validation videos, fixed K = 1..8 on the first report set, and the fold table (4 random halvings
                 of the sets, both ways, calibrating on 1, 2, 4 or 8 sets). With --plot, accuracy vs mean frames on
                 the report set is drawn to that PNG.
memory           peak RSS of `predict --stream` on the 10-minute source vs a 30-second one (each in a fresh
                 subprocess, as bench/predict_memory.py does). Goal <= 1.2: streaming memory is flat.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from predict_memory import make_long_video  # bench/ is not a package

NAMES = [f"c{i}" for i in range(10)]


def _meta(size: int, k: int = 8) -> dict:
    return {"class_names": NAMES, "preprocessing": {"input_size": size, "short_side": size, "num_segments": k}}


# ------------------------------------------------------------------------------------------- stream_speedup
@torch.no_grad()
def stream_speedup(size: int, *, k: int = 8, decisions: int = 40) -> tuple[float, float, float]:
    """(cached ms, recompute ms, ratio) per decision for istpan_mobilenetv2 at `size` px."""
    from istpan.inference.stream import FeatureCache
    from istpan.models import create_model

    torch.manual_seed(0)
    model = create_model("istpan_mobilenetv2", num_classes=10, input_size=size).eval()
    frames = torch.randn(k + decisions, 3, size, size)  # normalised frames: preprocessing is the same for both
    cache = FeatureCache(k)
    for f in frames[:k]:
        cache.push(model.frame_features(f[None])[0], 0.0)
    model(frames[None, :k])  # warm-up of both paths
    model.forward_clip(cache.clip())
    cached, full = [], []
    for i in range(k, k + decisions):
        t0 = time.perf_counter()
        cache.push(model.frame_features(frames[i][None])[0], float(i))  # the new frame, once
        a = model.forward_clip(cache.clip()).logits  # layer + head over the buffer
        t1 = time.perf_counter()
        b = model(frames[None, i + 1 - k: i + 1]).logits  # the whole window again
        t2 = time.perf_counter()
        cached.append(t1 - t0)
        full.append(t2 - t1)
        assert torch.allclose(a, b, atol=1e-4), "cached decision differs from the recomputed window"
    c, f = statistics.median(cached) * 1e3, statistics.median(full) * 1e3
    return c, f, statistics.median(b / a for a, b in zip(cached, full))  # paired: a busy moment hits both


# ------------------------------------------------------------------------------------------- window_passes
def window_passes(video: Path) -> tuple[float, float, int]:
    """(backbone passes / distinct sampled frame with the cache, the same without it, windows)."""
    from istpan.inference.windows import sliding_window_predict
    from istpan.models import create_model

    torch.manual_seed(0)
    model = create_model("istpan_tiny", num_classes=10, input_size=48).eval()
    result = sliding_window_predict(model, _meta(48), video, window=4, stride=2, unit="seconds")
    windows = len(result["windows"])
    k = 8
    return result["backbone_frames"] / result["sampled_frames"], windows * k / result["sampled_frames"], windows


# ------------------------------------------------------------------------------------------- memory
def child(video: str, sample_fps: float) -> None:
    """`istpan predict --stream` in Python: stream the video, print peak RSS (MiB) and the decision count as JSON."""
    from istpan.inference.predictor import Predictor
    from istpan.models import create_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    predictor = Predictor(create_model("istpan_tiny", num_classes=10, input_size=48), _meta(48))
    start = time.perf_counter()
    n = sum(1 for _ in predictor.stream(video, sample_fps=sample_fps))
    print(json.dumps({"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "before_mib": before,
                      "decisions": n, "seconds": time.perf_counter() - start}))


def stream_memory(video: Path, sample_fps: float) -> dict:
    cmd = [sys.executable, __file__, "--child", str(video), "--sample-fps", str(sample_fps)]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------- anytime_frames
ORDERS = ("spread", "dyadic")
# (rule, z): the default first; gain z=1 the default before; margin z=0 the rule before that
RULES = (("gain", 2.0), ("gain", 1.0), ("margin", 1.0), ("margin", 0.0))
SET_VIDEOS = 1280  # videos per generated set; fixed K = 1..7 on the first report set (7 more passes: a comparison)


def _passes(models: dict, cfg, root: Path | None = None, *, segments: int = 8, val_list: Path | None = None
            ) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, torch.Tensor], torch.Tensor]:
    """One pass over a set's videos (K = segments) for every model: per model and frame order the probabilities after
    1..K frames (V, K, C), each frame through the backbone once for both orders; per model the fixed-K scores (V, C)
    (the model on all K frames, as `istpan eval` computes them); the labels. Decoding is shared by the models."""
    from istpan.experiments.runs import _val_loader
    from istpan.inference.anytime import scores_from_features

    scores = {m: {o: [] for o in ORDERS} for m in models}
    fixed: dict[str, list[torch.Tensor]] = {m: [] for m in models}
    labels = []
    with torch.no_grad():
        for batch in _val_loader(cfg, test_num_frames=segments, root=root, val_list=val_list):
            video = batch["video"]  # (B, K, 3, S, S)
            for m, model in models.items():
                fixed[m].append(model(video).logits.softmax(-1))  # (B, C)
                if segments == 8:
                    feats = model.frame_features(video.flatten(0, 1)).unflatten(0, video.shape[:2])  # (B, K, ...)
                    for o in ORDERS:
                        scores[m][o].append(scores_from_features(model, feats, order=o))  # (B, K, C)
            labels.append(batch["label"])
    return ({m: {o: torch.cat(v) for o, v in d.items() if v} for m, d in scores.items()},
            {m: torch.cat(v) for m, v in fixed.items()}, torch.cat(labels))


def _top1(scores: torch.Tensor, labels: torch.Tensor) -> float:
    return 100 * (scores.argmax(-1) == labels).float().mean().item()


def _measure(scores: torch.Tensor, labels: torch.Tensor, cal) -> tuple[float, float, float, float]:
    """(top-1 %, loss in points vs fixed K = 8, its standard error, mean frames) of a calibration on these videos."""
    from istpan.inference.anytime import stopping_point
    from istpan.inference.anytime_gain import loss_bound, stopped_correct

    used = stopping_point(scores, cal.thresholds, cal.gain_model())  # (V,)
    correct = scores.argmax(-1) == labels[:, None]  # (V, N)
    loss, se, _ = loss_bound(correct, used, 0.0)
    acc = 100 * stopped_correct(correct, used).float().mean().item()
    return acc, loss, se, used.float().mean().item()


def _prefix(scores: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Top-1 % after the first n frames of the order, n = 1..8."""
    return (100 * (scores.argmax(-1) == labels[:, None]).float().mean(0)).tolist()


def _gain_curve(scores: torch.Tensor, labels: torch.Tensor, cal) -> tuple[list[float], list[float]]:
    """(mean frames, top-1 %) of the gain model `cal` brings at every threshold (quantiles of its predictions)."""
    from istpan.inference.anytime_gain import gain_stops, stopped_correct

    gain = cal.gain_model().predict(scores)  # (V, N - 1)
    correct = scores.argmax(-1) == labels[:, None]
    pts = []
    for t in torch.quantile(gain.flatten(), torch.linspace(0, 1, 101, dtype=torch.float64)).tolist():
        used = gain_stops(gain, t)
        pts.append((used.float().mean().item(), 100 * stopped_correct(correct, used).float().mean().item()))
    pts.sort()
    return [p[0] for p in pts], [p[1] for p in pts]


def anytime(demo: Path, *, max_loss: float, plot: Path | None, sets: int) -> dict[str, dict]:
    """`sets` generated sets of SET_VIDEOS videos (the demo's generator, seeds 3, 4, ...; the demo uses 0 and 1), all
    scored once. Per demo model, frame order and rule: `calibrate_scores` (the product's calibration) on the first
    half of the sets, measured on the second half (the report set), the swapped fold, and the demo's own 160
    validation videos; fixed K = 1..8 on the demo's videos and on the first report set; the fold table."""
    from istpan.data.tools import synth
    from istpan.evaluation.calibration import calibrate_scores
    from istpan.experiments.demo import FULL, VARIANTS, _slug
    from istpan.experiments.runs import synth_config
    from istpan.files.load import load_model
    from istpan.inference.anytime import DEFAULT_ORDER, calibrate_threshold

    if sets < 2 or sets % 2:
        raise SystemExit(f"--anytime-sets {sets}: an even number >= 2 (half calibrate, half report)")
    common = dict(size=FULL.size, num_frames=FULL.num_frames, val_fraction=1.0, progress=False)
    t0 = time.perf_counter()
    roots = [synth.generate(demo / f"data_anytime_fold{seed}", num_videos=SET_VIDEOS, seed=seed, **common)
             for seed in range(3, 3 + sets)]
    generated = time.perf_counter() - t0
    spec = synth.load_ground_truth(demo / "data")["spec"]
    if spec.get("version") != synth.SynthSpec.version:
        raise SystemExit(f"{demo}/data is synthetic data version {spec.get('version')}, this istpan makes "
                         f"{synth.SynthSpec.version}: rerun `istpan demo --out {demo}`")
    models = {}
    for name in VARIANTS:
        ckpt = demo / _slug(name) / "last.pt"
        if not ckpt.is_file():
            raise SystemExit(f"{ckpt}: missing; run `istpan demo --out {demo}` first (it trains the three models)")
        models[name] = load_model(ckpt)[0].eval()
    model_name, options, _ = next(iter(VARIANTS.values()))  # the data side of the config is the same for all three
    cfg = synth_config(demo / "data", model=model_name, out_dir=demo / "unused", budget=FULL, options=options)
    cfg.data.num_workers = 0
    t0 = time.perf_counter()
    scored = [_passes(models, cfg, root) for root in roots]  # per set: (scores, fixed K = 8, labels)
    val, val_fixed, val_labels = _passes(models, cfg, None)
    half = sets // 2
    fixed = {"val": {k: _passes(models, cfg, None, segments=k)[1:] for k in range(1, FULL.segments)},
             "report": {k: _passes(models, cfg, roots[half], segments=k)[1:]
                        for k in range(1, FULL.segments)}}  # fixed K = 1..7 (K = 8 is the pass above)
    seconds = time.perf_counter() - t0

    def cat(part: list, name: str, o: str) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat([p[0][name][o] for p in part]), torch.cat([p[2] for p in part])

    out: dict[str, dict] = {}
    for name in VARIANTS:
        r: dict = {"fixed": {**{k: _top1(f[name], lab) for k, (f, lab) in fixed["val"].items()},
                             8: _top1(val_fixed[name], val_labels)},
                   "fixed_report": {**{k: _top1(f[name], lab) for k, (f, lab) in fixed["report"].items()},
                                    8: _top1(scored[half][1][name], scored[half][2])},
                   "orders": {}, "seconds": seconds, "generated": generated,
                   "num": {"val": len(val_labels), "calibration": half * SET_VIDEOS, "report": half * SET_VIDEOS,
                           "fixed_report": SET_VIDEOS}}
        for o in ORDERS:
            cal, cal_labels = cat(scored[:half], name, o)
            rep, rep_labels = cat(scored[half:], name, o)
            assert torch.allclose(rep[:, -1], torch.cat([p[1][name] for p in scored[half:]]), atol=1e-5)  # = K = 8
            m: dict = {"prefix_report": _prefix(rep, rep_labels), "rules": {}}
            for rule, z in RULES:
                c = calibrate_scores(cal, cal_labels, rule=rule, z=z, max_loss=max_loss, order=o)
                swapped = calibrate_scores(rep, rep_labels, rule=rule, z=z, max_loss=max_loss, order=o)
                m["rules"][(rule, z)] = {
                    "cal": c, "report": _measure(rep, rep_labels, c), "val": _measure(val[name][o], val_labels, c),
                    "swapped": _measure(cal, cal_labels, swapped), "swapped_cal": swapped,
                    "gain_curve": _gain_curve(rep, rep_labels, c) if rule == "gain" else None}
            _, m["curve"] = calibrate_threshold(rep, rep_labels, max_loss=max_loss)  # every one margin: plot
            r["orders"][o] = m
        out[name] = r
    if plot is not None:
        _plot(out, plot)
    _folds({name: [(p[0][name][DEFAULT_ORDER], p[2]) for p in scored] for name in VARIANTS}, max_loss=max_loss)
    return out


def _folds(data: dict[str, list[tuple[torch.Tensor, torch.Tensor]]], *, max_loss: float, seed: int = 0) -> None:
    """How the rules do across calibration sets: per model the sets' (scores, labels), split at random into two
    halves four times; each half calibrates (on its first 1, 2, 4, ... sets) and the other half reports, both ways:
    8 folds per calibration size. Prints per model, rule and size the mean and worst held-out frames and loss."""
    import random

    from istpan.evaluation.calibration import calibrate_scores

    sets = len(next(iter(data.values())))
    rng = random.Random(seed)
    splits = []
    for _ in range(4):
        order = list(range(sets))
        rng.shuffle(order)
        a, b = sorted(order[: sets // 2]), sorted(order[sets // 2:])
        splits += [(a, b), (b, a)]
    sizes = sorted({1, *(2**i for i in range(1, 8) if 2**i < sets // 2), sets // 2})
    print(f"== anytime folds: {sets} sets of {SET_VIDEOS}, 4 random halvings x both ways; calibrated on the first "
          f"1, 2, ... sets of one half, reported on the whole other half ({sets // 2 * SET_VIDEOS} videos) ==")
    for m, sc in data.items():
        for rule, z in RULES:
            for size in sizes:
                rows = []
                for cal_sets, rep_sets in splits:
                    c = calibrate_scores(torch.cat([sc[i][0] for i in cal_sets[:size]]),
                                         torch.cat([sc[i][1] for i in cal_sets[:size]]), rule=rule, z=z,
                                         max_loss=max_loss)
                    _, loss, se, frames = _measure(torch.cat([sc[i][0] for i in rep_sets]),
                                                   torch.cat([sc[i][1] for i in rep_sets]), c)
                    rows.append((frames, loss, se))
                n = len(rows)
                folds_text = " ".join(f"{f:.2f},{lo:+.2f}" for f, lo, _ in rows)
                print(f"{m:<26} {rule:<6} z={z:g} calibrated on {size * SET_VIDEOS:>5}: "
                      f"mean {sum(r[0] for r in rows) / n:.2f} frames, loss {sum(r[1] for r in rows) / n:+.2f}; "
                      f"worst {max(r[0] for r in rows):.2f} frames, loss {max(r[1] for r in rows):+.2f}; "
                      f"folds {folds_text} (SE of a fold's loss ~{sum(r[2] for r in rows) / n:.2f})", flush=True)


def _plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=120)
    for (name, r), colour in zip(results.items(), ("tab:blue", "tab:orange", "tab:green")):
        ax.plot(list(r["fixed_report"]), list(r["fixed_report"].values()), "o--", color=colour, alpha=0.5,
                label=f"{name}: fixed K")
        m = r["orders"]["spread"]
        c = m["curve"]
        pts = sorted(zip(c.mean_frames, c.accuracy))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], ":", color=colour, alpha=0.6, label=f"{name}: one margin")
        frames, acc = m["rules"][RULES[0]]["gain_curve"]
        ax.plot(frames, acc, "-", color=colour, alpha=0.9, label=f"{name}: gain rule, any threshold")
        for key, star, size in ((RULES[0], "*", 14), (("margin", 1.0), "X", 8)):
            a, _, _, f = m["rules"][key]["report"]
            ax.plot([f], [a], star, color=colour, markersize=size, markeredgecolor="black")
    n = next(iter(results.values()))["num"]["report"]
    ax.set_xlabel("frames through the backbone per video (mean)")
    ax.set_ylabel(f"top-1 % ({n:,} held-out synthetic videos)")
    ax.set_title("anytime vs fixed K (spread order); ★ gain rule / ✕ per-step margins, calibrated on other videos "
                 "for loss + 2 SE (✕: + 1 SE) ≤ 1 point", wrap=True)
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="lower right", ncol=1)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def _report(res: dict[str, dict], max_loss: float) -> tuple[float, float]:
    """Print the anytime table; return (largest mean frames, largest held-out loss) of the default rule and order
    over the models and both folds."""
    from istpan.inference.anytime import DEFAULT_ORDER

    for name, r in res.items():
        n = r["num"]
        print(f"{name:<26} fixed K=1..8 top-1, {n['val']} val videos: "
              + " ".join(f"{v:.1f}" for v in r["fixed"].values()))
        print(f"{'':<26} fixed K=1..8 top-1, {n['fixed_report']} report videos: "
              + " ".join(f"{v:.2f}" for v in r["fixed_report"].values()))
        for o, m in r["orders"].items():
            print(f"{'':<26} {o}: first n frames of the order ({n['report']} report videos): "
                  + " ".join(f"{v:.1f}" for v in m["prefix_report"]))
            for (rule, z), q in m["rules"].items():
                c = q["cal"]
                thr = (f"gain <= {c.thresholds[0]:.3g}" if rule == "gain" else
                       "margins " + ",".join(f"{t:g}" for t in c.thresholds))
                print(f"{'':<26}   {rule} z={z:g} ({thr}): calibrated on {n['calibration']}: {c.mean_frames:.2f} "
                      f"frames, loss {c.full_accuracy - c.accuracy:.2f}, bound {c.bound['bound']:.2f}")
                for where, label in (("report", f"{n['report']} report"), ("swapped", "swapped fold"),
                                     ("val", f"{n['val']} demo val")):
                    acc, loss, se, frames = q[where]
                    print(f"{'':<26}     {label}: {frames:.2f} frames, {acc:.2f} %, loss {loss:+.2f} ± {se:.2f} "
                          "points vs fixed K = 8", flush=True)
    if res:
        r0 = next(iter(res.values()))
        print(f"(sets generated in {r0['generated']:.0f} s, all scores in {r0['seconds']:.0f} s)")
    key = RULES[0]
    rows = [(name, fold, *r["orders"][DEFAULT_ORDER]["rules"][key][fold]) for name, r in res.items()
            for fold in ("report", "swapped")]
    for name, fold, _, loss, se, frames in rows:
        print(f"anytime default ({key[0]} rule, z = {key[1]:g}, {DEFAULT_ORDER} order), {fold}: {name}: "
              f"{frames:.2f} frames at {loss:+.2f} ± {se:.2f} points")
    frames = max((row[5] for row in rows), default=float("nan"))
    loss = max((row[3] for row in rows), default=float("nan"))
    print(f"anytime: largest mean frames {frames:.2f}, largest held-out loss {loss:.2f} points, over the three models "
          f"and both folds (goal <= 4 at <= {max_loss:g} point)", flush=True)
    return frames, loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, default=Path("runs/demo"), help="an `istpan demo --out` folder")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the long generated video")
    parser.add_argument("--max-loss", type=float, default=1.0, help="top-1 points anytime may lose vs fixed K = 8")
    parser.add_argument("--plot", type=Path, help="write the accuracy vs frames plot here (PNG)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the timings")
    parser.add_argument("--sample-fps", type=float, default=5.0, help="streaming rate in the memory check")
    parser.add_argument("--no-anytime", action="store_true", help="skip the anytime part (no demo models needed)")
    parser.add_argument("--only-anytime", action="store_true", help="only the anytime part (no timings, no memory)")
    parser.add_argument("--anytime-sets", type=int, default=16, help="anytime: generated sets of 1,280 videos (seeds "
                        "3, 4, ...): the first half calibrates, the second half reports (default 16: 10,240 + 10,240)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.sample_fps)
        return
    torch.set_num_threads(args.threads)

    # timings first, in a fresh process: after the anytime part's 20,000 videos the same timings came out ~1.5x apart
    speedup, passes = "skipped", "skipped"
    if not args.only_anytime:
        print("== stream_speedup: istpan_mobilenetv2, K = 8, a decision every frame ==", flush=True)
        speedups = []
        for size in (112, 224):
            c, f, ratio = stream_speedup(size)
            speedups.append(ratio)
            print(f"{size} px: cached {c:.1f} ms vs recompute {f:.1f} ms per decision: x{ratio:.2f}", flush=True)
        speedup = f"{min(speedups):.2f}"

        with tempfile.TemporaryDirectory(prefix="istpan-bench-") as tmp:
            tmp = Path(tmp)
            t0 = time.perf_counter()
            long = make_long_video(tmp / "long.mp4", seconds=60 * args.minutes, size=(48, 64))
            short = make_long_video(tmp / "short.mp4", seconds=30, size=(48, 64))
            print(f"== window_passes: --window 4 --stride 2 s on a {args.minutes:g}-minute video (generated in "
                  f"{time.perf_counter() - t0:.0f} s) ==", flush=True)
            ratio_passes, without, windows = window_passes(long)
            passes = f"{ratio_passes:.3f}"
            print(f"{windows} windows: {passes} backbone passes per distinct sampled frame "
                  f"(recompute per window: {without:.3f})", flush=True)
            print(f"== memory: streaming at {args.sample_fps:g} frames/s, a decision every frame ==", flush=True)
            rows = {"30 s": stream_memory(short, args.sample_fps),
                    f"{args.minutes:g} min": stream_memory(long, args.sample_fps)}
        for name, r in rows.items():
            print(f"{name:>8}: {r['decisions']} decisions in {r['seconds']:.0f} s, peak RSS {r['peak_mib']:.0f} MiB")
        memory = rows[f"{args.minutes:g} min"]["peak_mib"] / rows["30 s"]["peak_mib"]
        print(f"peak RSS ratio {args.minutes:g} min / 30 s: {memory:.3f} (goal <= 1.2)", flush=True)

    anytime_frames = "skipped"
    if not args.no_anytime:
        print("== anytime: the demo's models, calibrated on one generated set, reported on another ==", flush=True)
        res = anytime(args.demo, max_loss=args.max_loss, plot=args.plot, sets=args.anytime_sets)
        anytime_frames = f"{_report(res, args.max_loss)[0]:.2f}"
    print(f"stream_speedup={speedup} window_passes={passes} anytime_frames={anytime_frames}")

if __name__ == "__main__":
    main()
