"""Cost and (synthetic) effect of the modern training recipe, measured in one run.

    .venv/bin/python bench/recipe.py              # cost: istpan_mobilenetv2, 112 px, K=8, batch 4, 1 thread, 1 worker
    .venv/bin/python bench/recipe.py --accuracy   # effect of each part on the synthetic set, 3 seeds (slow)

Cost (default mode). Both variants train the same model on the same real loader (PyAV decode of MP4s written by the
synthetic-data generator, sampling, transforms, 1 worker):
    off: TSN's recipe (multi-scale crop + flip), no mixing, no EMA;
    on:  + RandAugment + random erasing + colour jitter (--color-jitter; 0 = exactly configs/folder.yaml's modern
         recipe) + mixup/cutmix with label smoothing + EMA.
    recipe_overhead = step time on / step time off (goal <= 1.10: the augmentations run in the loader workers and
    must hide behind compute; mixing and the EMA update are per step on the training side).
It also times both recipes on an in-memory batch (the training side alone: mixing and the EMA update;
`train_side_overhead`) and the loader's own throughput (clips/s, no model) with and without the augmentations.
Rounds alternate the variants (rotating their order) so that drift in machine load hits all alike; medians are
reported. Last line: `recipe_overhead=<x> loader_clips_s_on=<y> loader_clips_s_off=<z>`.

Accuracy (--accuracy). istpan_tiny from scratch on the generated action dataset (docs/synthetic.md), the same
budget for every variant, one part of the recipe at a time and all of them, over --seeds seeds; top-1 on the
validation videos, mean ± std. Synthetic evidence only: 64-px toy videos, small budget; it says whether a part
hurts or helps *here*, not on UCF101 or Kinetics. Last line: `modern_minus_tsn=<points>`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _common import Endless, timed_rounds, train_bench_config

from istpan.config import AugmentConfig
from istpan.data import build_dataset, build_loader
from istpan.data.tools.synth import generate

MODERN = dict(policy="randaugment", random_erasing=0.25, mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1)
EMA_DECAY = 0.999


def cost(args: argparse.Namespace) -> None:
    from istpan.models import create_model
    from istpan.runtime.amp import make_grad_scaler
    from istpan.training.mixing import BatchMix
    from istpan.training.optim import build_optimizer, build_scheduler
    from istpan.training.run_log import RunLog
    from istpan.training.train import train_one_epoch

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="istpan_bench_recipe_"))
    data = generate(tmp / "synth", num_videos=4 * args.batch * (args.steps + 2), size=max(96, args.size + 16),
                    num_frames=32, val_fraction=0.0, reuse=True)
    variants: dict = {}
    drain: dict = {}  # loader-alone variants: batches prefetched during the pause are taken before the timing
    for name, augment in (("off", {}), ("on", {**MODERN, "color_jitter": args.color_jitter})):
        cfg = train_bench_config(args, data, tmp / "run", augment=augment, ema_decay=EMA_DECAY if augment else 0.0)
        dataset = build_dataset(cfg.data, split="train", train=True, augment=cfg.augment)
        loader = build_loader(dataset, batch_size=args.batch, train=True, num_workers=args.workers, seed=0)
        torch.manual_seed(0)
        model = create_model(args.model, num_classes=len(dataset.class_names), input_size=args.size)
        ema = None
        if cfg.train.ema_decay > 0:
            from timm.utils import ModelEmaV3

            ema = ModelEmaV3(model, decay=cfg.train.ema_decay, use_warmup=True)
        optimizer = build_optimizer(model, cfg.optim)
        scheduler = build_scheduler(optimizer, cfg.optim, steps_per_epoch=args.steps, epochs=1000)
        mix = BatchMix(cfg.augment, num_classes=len(dataset.class_names), multi_label=False)
        endless = Endless(loader)
        log = RunLog(tmp / "run", enabled=False, tensorboard=False, resume_step=None)
        batch = next(iter(loader))
        batch.pop("skipped")
        memory = [batch] * args.steps  # one real batch, kept in memory: the training side alone

        def run(source, cfg=cfg, model=model, optimizer=optimizer, scheduler=scheduler, mix=mix, ema=ema, log=log):
            train_one_epoch(model, source, optimizer, scheduler, make_grad_scaler("none", torch.device("cpu")),
                            cfg=cfg, epoch=0, steps=args.steps, device=torch.device("cpu"), log=log, progress=False,
                            mix=mix, ema=ema)

        variants[name] = lambda run=run, endless=endless: run(endless)
        variants[f"{name} in-memory"] = lambda run=run, memory=memory: run(memory)
        variants[f"{name} loader alone"] = lambda endless=endless: [next(iter(endless)) for _ in range(args.steps)]
        drain[f"{name} loader alone"] = endless
    def drain_prefetch(name: str) -> None:  # loader alone: take the batches prefetched during the pause
        for _ in range(2 * args.workers) if name in drain else ():  # prefetch_factor 2 per worker
            next(iter(drain[name]))

    step = timed_rounds(variants, rounds=args.rounds, steps=args.steps, before=drain_prefetch)
    print(f"model {args.model}  input {args.size}px  K={args.segments}  batch {args.batch}  threads {args.threads}  "
          f"workers {args.workers}  device cpu (no GPU lent to this run)")
    for name, t in step.items():
        print(f"{name:>22}: {1000 * t:8.1f} ms/step  {args.batch / t:7.2f} clips/s")
    print(f"train_side_overhead={step['on in-memory'] / step['off in-memory']:.3f} (mixing + EMA, in-memory batches)")
    on_rate, off_rate = args.batch / step["on loader alone"], args.batch / step["off loader alone"]
    print(f"recipe_overhead={step['on'] / step['off']:.3f} loader_clips_s_on={on_rate:.2f} "
          f"loader_clips_s_off={off_rate:.2f}")


ACCURACY_VARIANTS = {  # name -> (augment section, train.ema_decay)
    "tsn (none)": ({}, 0.0),
    "+ randaugment": ({"policy": "randaugment"}, 0.0),
    "+ random erasing": ({"random_erasing": 0.25}, 0.0),
    "+ mixup/cutmix": ({"mixup_alpha": 0.8, "cutmix_alpha": 1.0}, 0.0),
    "+ label smoothing": ({"label_smoothing": 0.1}, 0.0),
    "+ EMA": ({}, EMA_DECAY),
    "modern (all)": (MODERN, EMA_DECAY),
}


def accuracy(args: argparse.Namespace) -> None:
    from istpan.experiments.runs import Budget, synth_config
    from istpan.training.train import train

    torch.set_num_threads(args.threads)
    budget = Budget(num_videos=args.videos, epochs=args.epochs, num_workers=args.workers)
    tmp = Path(args.out or tempfile.mkdtemp(prefix="istpan_recipe_acc_"))
    data = generate(tmp / "data", seed=0, num_videos=budget.num_videos, size=budget.size,
                    num_frames=budget.num_frames)
    options = {"time_encoding": "fourier", "head": "glimpse"}  # the order-aware model: the best one on this data
    results: dict[str, list[float]] = {}
    start = time.perf_counter()
    chosen = {n: v for n, v in ACCURACY_VARIANTS.items() if not args.variants or n in args.variants}
    for name, (augment, ema) in chosen.items():
        for seed in range(args.seeds):
            cfg = synth_config(data, model="istpan_tiny", out_dir=tmp / "runs" / f"{len(results)}_{seed}",
                               budget=budget, seed=seed, options=options, device="cpu")
            cfg.data.val_annotations = str(data / "val.txt")  # validated inside train: EMA vs raw is chosen there
            cfg.augment = AugmentConfig(**augment)
            cfg.train.ema_decay = ema
            result = train(cfg, resume="never", progress=False)
            top1 = result["final"]["top1"]
            results.setdefault(name, []).append(top1)
            extra = (f" (raw {result['final']['raw_top1']:.1f}, ema {result['final']['ema_top1']:.1f})"
                     if "ema_top1" in result["final"] else "")
            print(f"{name:>18} seed {seed}: top-1 {top1:5.1f}{extra}  [{time.perf_counter() - start:.0f} s]",
                  flush=True)
    print(f"\nistpan_tiny (time_encoding=fourier head=glimpse), {budget.num_videos} synthetic videos, "
          f"{budget.epochs} epochs, {args.seeds} seeds; top-1 % on the validation videos, mean ± std")
    print("| recipe | top-1 % |\n| --- | --- |")
    for name, values in results.items():
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"| {name} | {statistics.mean(values):.1f} ± {std:.1f} |")
    print(f"wall {time.perf_counter() - start:.0f} s")
    if "modern (all)" in results and "tsn (none)" in results:
        gain = statistics.mean(results["modern (all)"]) - statistics.mean(results["tsn (none)"])
        print(f"modern_minus_tsn={gain:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accuracy", action="store_true", help="synthetic accuracy of each part (slow)")
    parser.add_argument("--model", default="istpan_mobilenetv2")
    parser.add_argument("--size", type=int, default=112, help="input crop size")
    parser.add_argument("--num-frames", "--segments", type=int, default=8, dest="segments", help="K")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (1: the worker gets a core)")
    parser.add_argument("--color-jitter", type=float, default=0.4,
                        help="cost: colour jitter of the 'on' variant (0.4: every augmentation; 0: the modern configs)")
    parser.add_argument("--seeds", type=int, default=3, help="--accuracy: seeds per variant")
    parser.add_argument("--epochs", type=int, default=6, help="--accuracy: epochs per run")
    parser.add_argument("--videos", type=int, default=320, help="--accuracy: synthetic videos (train + val)")
    parser.add_argument("--variants", nargs="*", default=[], help="--accuracy: only these rows (names as printed)")
    parser.add_argument("--out", default="", help="--accuracy: folder for data and runs (default: a temp dir)")
    args = parser.parse_args()
    if args.accuracy:
        accuracy(args)
    else:
        cost(args)


if __name__ == "__main__":
    main()
