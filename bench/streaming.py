"""Streaming, shared windows and anytime inference (issue 11): ratios measured in one run.

    .venv/bin/istpan demo --out runs/demo                 # trains the three synthetic models (once)
    .venv/bin/python bench/streaming.py --demo runs/demo --plot docs/img/anytime.png
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
anytime_frames   mean frames used on the synthetic validation set (160 videos) by per-step margin thresholds
                 calibrated for <= 1 point of top-1 below fixed K = 8 on 640 *other* generated videos (the demo's
                 generator, seed 2: the figure is not fit to its own test data), for the paper's layer, TSN and the
                 order-aware model (the demo's three models); the largest of the three is reported, and the measured
                 loss is printed beside it. Also printed: one shared threshold calibrated the same way, and the
                 per-step rule calibrated in-sample. With --plot, accuracy vs mean frames (one margin at every
                 threshold, fixed K = 1..8, and the per-step point) is drawn to that PNG.
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
    from istpan.engine.stream import FeatureCache
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
    from istpan.engine.windows import sliding_window_predict
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
    from istpan.engine.predictor import Predictor
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
def _scores(model, cfg, root: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    from istpan.engine.anytime import anytime_scores
    from istpan.experiments.runs import _val_loader

    scores, labels = [], []
    for batch in _val_loader(cfg, test_segments=8, root=root):
        scores.append(anytime_scores(model, batch["video"]))  # (B, 8, C) after 1..8 frames, coarse to fine
        labels.append(batch["label"])
    return torch.cat(scores), torch.cat(labels)


def _measure(scores: torch.Tensor, labels: torch.Tensor, thresholds) -> tuple[float, float, float]:
    """(top-1 %, loss in points vs fixed K = 8, mean frames) of a stopping rule on these videos."""
    from istpan.engine.anytime import stopping_point

    used = stopping_point(scores, thresholds)  # (V,)
    acc = 100 * (scores[torch.arange(len(used)), used - 1].argmax(-1) == labels).float().mean().item()
    full = 100 * (scores[:, -1].argmax(-1) == labels).float().mean().item()
    return acc, full - acc, used.float().mean().item()


def anytime(demo: Path, *, max_loss: float, plot: Path | None) -> dict[str, dict]:
    """Per demo model: fixed-K accuracy (K = 1..8); the per-step thresholds calibrated on a separate generated
    calibration set and measured on the validation set; the single threshold the same way; the in-sample curve."""
    from istpan.data import synth
    from istpan.engine.anytime import calibrate_threshold, calibrate_thresholds
    from istpan.engine.checkpoint import load_model
    from istpan.experiments.demo import FULL, VARIANTS, _slug
    from istpan.experiments.runs import synth_config, test_model

    # calibration videos: the demo's generator with another seed (the demo uses 0 and 1), all "val"
    cal_root = synth.generate(demo / "data_anytime_calibration", num_videos=640, seed=2, size=FULL.size,
                              num_frames=FULL.num_frames, val_fraction=1.0, progress=False)
    out: dict[str, dict] = {}
    for name, (model_name, options, _) in VARIANTS.items():
        ckpt = demo / _slug(name) / "last.pt"
        if not ckpt.is_file():
            raise SystemExit(f"{ckpt}: missing; run `istpan demo --out {demo}` first (it trains the three models)")
        model, _ = load_model(ckpt)
        cfg = synth_config(demo / "data", model=model_name, out_dir=demo / "unused", budget=FULL, options=options)
        cfg.data.num_workers = 0
        fixed = {k: test_model(model, cfg, test_segments=k)["top1"] for k in range(1, FULL.segments + 1)}
        val, val_labels = _scores(model, cfg)
        cal, cal_labels = _scores(model, cfg, cal_root)
        per_step, _, _ = calibrate_thresholds(cal, cal_labels, max_loss=max_loss)
        single, _ = calibrate_threshold(cal, cal_labels, max_loss=max_loss)
        _, curve = calibrate_threshold(val, val_labels, max_loss=max_loss)  # every single threshold, for the plot
        out[name] = {"fixed": fixed, "thresholds": per_step, "per_step": _measure(val, val_labels, per_step),
                     "single_threshold": single, "single": _measure(val, val_labels, single), "curve": curve,
                     "in_sample": calibrate_thresholds(val, val_labels, max_loss=max_loss)}
    if plot is not None:
        _plot(out, plot)
    return out


def _plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for (name, r), colour in zip(results.items(), ("tab:blue", "tab:orange", "tab:green")):
        c = r["curve"]
        pts = sorted(zip(c.mean_frames, c.accuracy))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", color=colour, label=f"{name}: anytime, one margin")
        ax.plot(list(r["fixed"]), list(r["fixed"].values()), "o--", color=colour, alpha=0.6,
                label=f"{name}: fixed K")
        acc, _, frames = r["per_step"]
        ax.plot([frames], [acc], "*", color=colour, markersize=14)
    ax.set_xlabel("frames through the backbone per video (mean)")
    ax.set_ylabel("top-1 % (synthetic validation, 160 videos)")
    ax.set_title("anytime (coarse-to-fine, stop at a margin) vs fixed K; ★ = per-step margins calibrated on other "
                 "videos for ≤ 1 point", wrap=True)
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, default=Path("runs/demo"), help="an `istpan demo --out` folder")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the long generated video")
    parser.add_argument("--max-loss", type=float, default=1.0, help="top-1 points anytime may lose vs fixed K = 8")
    parser.add_argument("--plot", type=Path, help="write the accuracy vs frames plot here (PNG)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the timings")
    parser.add_argument("--sample-fps", type=float, default=5.0, help="streaming rate in the memory check")
    parser.add_argument("--no-anytime", action="store_true", help="skip the anytime part (no demo models needed)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.sample_fps)
        return
    torch.set_num_threads(args.threads)

    print("== anytime: synthetic validation set, the demo's models ==", flush=True)
    res = {} if args.no_anytime else anytime(args.demo, max_loss=args.max_loss, plot=args.plot)
    for name, r in res.items():
        fixed = " ".join(f"{v:.1f}" for v in r["fixed"].values())
        print(f"{name:<26} fixed K=1..8 top-1: {fixed}")
        acc, loss, frames = r["per_step"]
        thr = ",".join(f"{t:g}" for t in r["thresholds"])
        print(f"{'':<26} per-step margins {thr} (calibrated on 640 other videos): {acc:.1f} % with {frames:.2f} "
              f"frames, loss {loss:.2f} points vs fixed K = 8", flush=True)
        acc, loss, frames = r["single"]
        print(f"{'':<26} one margin >= {r['single_threshold']:.2f} (same calibration): {acc:.1f} % with {frames:.2f} "
              f"frames, loss {loss:.2f} points; per-step calibrated in-sample: {r['in_sample'][1]:.1f} % with "
              f"{r['in_sample'][2]:.2f} frames", flush=True)
    anytime_frames = max((r["per_step"][2] for r in res.values()), default=float("nan"))
    anytime_loss = max((r["per_step"][1] for r in res.values()), default=float("nan"))
    print(f"anytime: largest mean frames {anytime_frames:.2f}, largest loss {anytime_loss:.2f} points (goal <= 4 at "
          "<= 1 point)", flush=True)

    print("== stream_speedup: istpan_mobilenetv2, K = 8, a decision every frame ==", flush=True)
    speedups = []
    for size in (112, 224):
        c, f, ratio = stream_speedup(size)
        speedups.append(ratio)
        print(f"{size} px: cached {c:.1f} ms vs recompute {f:.1f} ms per decision: x{ratio:.2f}", flush=True)

    with tempfile.TemporaryDirectory(prefix="istpan-bench-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        long = make_long_video(tmp / "long.mp4", seconds=60 * args.minutes, size=(48, 64))
        short = make_long_video(tmp / "short.mp4", seconds=30, size=(48, 64))
        print(f"== window_passes: --window 4 --stride 2 s on a {args.minutes:g}-minute video (generated in "
              f"{time.perf_counter() - t0:.0f} s) ==", flush=True)
        passes, without, windows = window_passes(long)
        print(f"{windows} windows: {passes:.3f} backbone passes per distinct sampled frame "
              f"(recompute per window: {without:.3f})", flush=True)
        print(f"== memory: streaming at {args.sample_fps:g} frames/s, a decision every frame ==", flush=True)
        rows = {"30 s": stream_memory(short, args.sample_fps),
                f"{args.minutes:g} min": stream_memory(long, args.sample_fps)}
    for name, r in rows.items():
        print(f"{name:>8}: {r['decisions']} decisions in {r['seconds']:.0f} s, peak RSS {r['peak_mib']:.0f} MiB")
    memory = rows[f"{args.minutes:g} min"]["peak_mib"] / rows["30 s"]["peak_mib"]
    print(f"peak RSS ratio {args.minutes:g} min / 30 s: {memory:.3f} (goal <= 1.2)")
    print(f"stream_speedup={min(speedups):.2f} window_passes={passes:.3f} anytime_frames={anytime_frames:.2f}")


if __name__ == "__main__":
    main()
