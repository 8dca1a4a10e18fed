"""Accuracy parity: the demo's models trained on a prepared copy (`istpan data prepare`, defaults) of the synthetic
set against the same models trained on the original videos, same seeds.

    .venv/bin/python bench/prepare_parity.py [--seeds 0 1 2] [--variants NAME ...] [--dir DIR]

The data is the demo's (istpan/experiments/demo.py FULL budget: 640 videos of 64x64, 32 frames, data seed 0); the copy
is H.264 at the default GOP and crf (64 px is under the short side: no resize, only the re-encode). Each of the demo's
three variants is trained from scratch with the demo's budget on both, for each training seed, and tested on the
same form's val split (160 videos). Printed: top-1 per seed, mean ± std over seeds, and the paired difference
(copy - original) with its std. Last line: `parity_diff=<largest |mean paired difference| over the variants>
seed_std=<mean std of top-1 over seeds>` (points).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/istpan_bench_parity"))
    parser.add_argument("--variants", nargs="+", help="demo variants to train (default: all three)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    from istpan.config import load_config
    from istpan.data.tools import synth
    from istpan.data.tools.prepare import PrepareOptions, prepare_dataset
    from istpan.experiments.demo import FULL, VARIANTS
    from istpan.experiments.runs import synth_config, test_model, train_variant

    raw = synth.generate(args.dir / "data", seed=0, num_videos=FULL.num_videos, size=FULL.size,
                         num_frames=FULL.num_frames, workers=2)
    cfg = load_config(None, [f"data.root={raw}", f"data.train_annotations={raw}/train.txt",
                             f"data.val_annotations={raw}/val.txt", f"data.classes={raw}/classes.txt"])
    copy = args.dir / "prepared"
    result = prepare_dataset(cfg, copy, PrepareOptions(), workers=2, progress=False)
    assert not result["failed"], result["failed"]
    print(f"copy: {result['bytes_out'] / 2**20:.1f} MB for {result['bytes_in'] / 2**20:.1f} MB", file=sys.stderr)

    results_file = args.dir / "results.json"
    top1: dict[str, dict[str, dict[str, float]]] = {}  # variant -> form -> seed -> top-1
    if results_file.is_file():
        top1 = json.loads(results_file.read_text())
    variants = {name: VARIANTS[name] for name in (args.variants or VARIANTS)}
    for seed in args.seeds:
        for name, (model, options, losses) in variants.items():
            for form, root in (("original", raw), ("prepared", copy)):
                key = str(seed)
                if key in top1.get(name, {}).get(form, {}):
                    continue  # measured by an earlier run of this script
                run = args.dir / "runs" / f"{form}_{model}_{len(options)}_{seed}"
                run_cfg = synth_config(root, model=model, out_dir=run, budget=FULL, seed=seed, options=options,
                                       **losses)
                trained, _, _ = train_variant(run_cfg, progress=False)
                top1.setdefault(name, {}).setdefault(form, {})[key] = test_model(trained, run_cfg)["top1"]
                results_file.write_text(json.dumps(top1, indent=1))
                print(f"{name} {form} seed {seed}: top-1 {top1[name][form][key]:.2f}", file=sys.stderr, flush=True)

    print(f"{'variant':28s} {'original':>22s} {'prepared':>22s} {'paired diff':>14s}")
    diffs, stds = [], []
    for name in variants:
        seeds = [str(s) for s in args.seeds]
        a = [top1[name]["original"][s] for s in seeds]
        b = [top1[name]["prepared"][s] for s in seeds]
        d = [y - x for x, y in zip(a, b, strict=True)]
        print(f"{name:28s} {statistics.mean(a):6.2f} ± {sd(a):4.2f} ({' '.join(f'{x:.1f}' for x in a)}) "
              f"{statistics.mean(b):6.2f} ± {sd(b):4.2f} ({' '.join(f'{x:.1f}' for x in b)}) "
              f"{statistics.mean(d):+6.2f} ± {sd(d):4.2f}")
        diffs.append(abs(statistics.mean(d)))
        stds.append((sd(a) + sd(b)) / 2)
    print(f"parity_diff={max(diffs):.2f} seed_std={statistics.mean(stds):.2f}")


if __name__ == "__main__":
    main()
