"""Training-step cost of istpan's loop, measured in one run (ratios, not absolute times, are the result).

    .venv/bin/python bench/train_step.py                  # istpan_tiny, 64 px, K=8, batch 8, 1 thread + 1 worker
    .venv/bin/python bench/train_step.py --model istpan_mobilenetv2 --size 112 --threads 2 --amp-too

1. loop_overhead   = step time of `istpan.training.train.train_one_epoch` / step time of a bare 20-line torch loop,
                     same model, same in-memory batch, same loss (CE + beta·l_interactive + gamma·l_attn) and
                     gradient clipping; what remains is the loop's own machinery (seeding, schedule, logging,
                     progress, finiteness check). Goal <= 1.05.
2. loader_overhead = step time of istpan's loop fed by the real loader (PyAV decode of MP4s written here by the
                     synthetic-data generator, sampling, transforms, workers) / the same loop on in-memory batches.
                     Goal <= 1.15 (decode must hide behind compute).

Rounds alternate the variants (rotating their order, pausing between them so the loader's background prefetch never
overlaps another variant's timing) so that drift in machine load hits all of them alike; the median step time per
variant is reported. Last line: `loop_overhead=<x> loader_overhead=<y>`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from _common import Endless, timed_rounds, train_bench_config

from istpan.data import build_dataset, build_loader
from istpan.data.tools.synth import generate
from istpan.models import create_model
from istpan.runtime.amp import make_grad_scaler
from istpan.training.optim import build_optimizer, build_scheduler
from istpan.training.run_log import RunLog
from istpan.training.train import train_one_epoch


def bare_loop(model, batches, optimizer, *, beta: float, gamma: float, clip: float) -> None:
    """The reference: the 20 lines anyone would write."""
    from istpan.losses import attention_losses

    model.train()
    for batch in batches:
        out = model(batch["video"])
        att = attention_losses(out)
        loss = torch.nn.functional.cross_entropy(out.logits, batch["label"])
        loss = loss + beta * att["interactive"] + gamma * att["attn"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="istpan_tiny")
    parser.add_argument("--size", type=int, default=64, help="input crop size")
    parser.add_argument("--num-frames", "--segments", type=int, default=8, dest="segments", help="K")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (1: the worker gets a core)")
    parser.add_argument("--amp-too", action="store_true", help="also time istpan's loop with train.amp=bf16")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    tmp = Path(tempfile.mkdtemp(prefix="istpan_bench_"))
    data = generate(tmp / "synth", num_videos=4 * args.batch * (args.steps + 2), size=max(96, args.size + 16),
                    num_frames=32, val_fraction=0.0, reuse=True)
    cfg = train_bench_config(args, data, tmp / "run")
    dataset = build_dataset(cfg.data, split="train", train=True)
    loader = build_loader(dataset, batch_size=args.batch, train=True, num_workers=args.workers, seed=0)
    batch = next(iter(loader))  # one real batch, kept in memory
    batch.pop("skipped")
    memory = [batch] * args.steps
    torch.manual_seed(0)
    model = create_model(args.model, num_classes=len(dataset.class_names), input_size=args.size)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, steps_per_epoch=args.steps, epochs=1000)
    endless = Endless(loader)
    log = RunLog(tmp / "run", enabled=False, tensorboard=False, resume_step=None)
    device = torch.device("cpu")

    def istpan_loop(source, amp: str = "none") -> None:
        cfg.train.amp = amp
        train_one_epoch(model, source, optimizer, scheduler, make_grad_scaler(amp, device), cfg=cfg, epoch=0,
                        steps=args.steps, device=device, log=log, progress=False)

    variants = {
        "bare": lambda: bare_loop(model, memory, optimizer, beta=cfg.train.beta, gamma=cfg.train.gamma,
                                  clip=cfg.optim.clip_grad_norm),
        "istpan": lambda: istpan_loop(memory),
        "istpan+loader": lambda: istpan_loop(endless),
    }
    if args.amp_too:
        variants["istpan bf16"] = lambda: istpan_loop(memory, "bf16")
    step = timed_rounds(variants, rounds=args.rounds, steps=args.steps)
    print(f"model {args.model}  input {args.size}px  K={args.segments}  batch {args.batch}  threads {args.threads}  "
          f"workers {args.workers}  device cpu (no GPU lent to this run)")
    for name, t in step.items():
        print(f"{name:>14}: {1000 * t:8.1f} ms/step  {args.batch / t:7.2f} clips/s")
    loop, loader_ratio = step["istpan"] / step["bare"], step["istpan+loader"] / step["istpan"]
    print(f"loop_overhead={loop:.3f} loader_overhead={loader_ratio:.3f}")


if __name__ == "__main__":
    main()
