"""Ctrl-C during training: stop between two optimiser steps, save, and say how to resume."""

from __future__ import annotations

import signal
import sys
import threading

import torch

from istpan.runtime.distributed import get_world_size, is_main_process, reduce_sum

__all__ = ["StopFlag"]


class StopFlag:
    """Ctrl-C asks the loop to stop after the current step (a second Ctrl-C stops at once, without saving).

    Why not just catch KeyboardInterrupt: it can land inside `optimizer.step()`, leaving half-updated weights that
    would be saved as if they were a real state. Under DDP every rank must stop at the same step, so the flag is
    OR-reduced over ranks.
    """

    def __init__(self) -> None:
        self._flag = False
        self._previous = None

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum, frame) -> None:
        self._flag = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the next Ctrl-C interrupts immediately
        if is_main_process():
            print("\nCtrl-C: stopping after this step and saving a checkpoint (Ctrl-C again to quit now)",
                  file=sys.stderr)

    def requested(self, device: torch.device) -> bool:
        if get_world_size() > 1:
            return reduce_sum([float(self._flag)], device)[0] > 0
        return self._flag
