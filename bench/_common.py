"""Pieces the training-cost benches share (bench/train_step.py, bench/recipe.py): one copy of the timing protocol.

Run the benches as scripts (`python bench/x.py`): Python puts bench/ on sys.path, so `from _common import ...` works.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from istpan.config import Config, config_from_dict


class Endless:
    """A long epoch's steady state: timed chunks continue one iterator, so the workers' pipeline never drains."""

    def __init__(self, loader) -> None:
        self._it = self._forever(loader)

    @staticmethod
    def _forever(loader):
        while True:
            yield from loader

    def __iter__(self):
        return self._it


def train_bench_config(args, data: Path, out_dir: Path, *, augment: dict | None = None,
                       ema_decay: float = 0.0) -> Config:
    """The config both training benches time: synthetic data, SGD without warm-up, clipping at 20, no logging."""
    return config_from_dict({
        "data": dict(format="synthetic", root=str(data), num_frames=args.segments, input_size=args.size,
                     short_side=args.size + 16, num_workers=args.workers),
        "model": dict(name=args.model, options={"input_size": args.size}),
        "optim": dict(name="sgd", lr=0.001, warmup_epochs=0, clip_grad_norm=20.0),
        "train": dict(batch_size=args.batch, partial_bn=False, log_every=10, tensorboard=False, epochs=1000,
                      ema_decay=ema_decay, out_dir=str(out_dir)),
        "augment": augment or {},
    })


def timed_rounds(variants: dict[str, Callable[[], object]], *, rounds: int, steps: int,
                 before: Callable[[str], None] | None = None) -> dict[str, float]:
    """Median seconds per step of each variant.

    One warm-up call each (allocator, oneDNN primitives, loader workers), then `rounds` rounds in a rotated order so
    that no variant always follows another and drift in machine load hits all alike. The 0.5 s pause lets a loader
    worker finish its prefetch so it does not run during the next timing; `before(name)` runs untimed after it.
    """
    for run in variants.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            time.sleep(0.5)
            if before is not None:
                before(name)
            start = time.perf_counter()
            variants[name]()
            times[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(t) for name, t in times.items()}
