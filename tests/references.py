"""Naive reference implementations shared by several test modules (written as the official scripts are)."""

from __future__ import annotations

from collections.abc import Sequence


def charades_ap_loop(conf: Sequence[float], labels: Sequence[int]) -> float:
    """THUMOSeventclspr from Charades_v1_classify.m, line by line (sort is stable in MATLAB: ties keep input order)."""
    order = sorted(range(len(conf)), key=lambda i: -conf[i])
    tp = fp = 0
    ap = 0.0
    npos = sum(1 for v in labels if v == 1)
    for i in order:
        if labels[i] == 1:
            tp += 1
            ap += tp / (tp + fp)
        else:
            fp += 1
    return ap / npos if npos else float("nan")


def naive_decode(path, short_side: int | None = None):
    """Every frame of a video in order, RGB uint8 (T, H, W, 3), the short side scaled to `short_side` (bilinear, the
    long side rounded): PyAV called directly, no index, no seeking."""
    import av
    import numpy as np

    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if short_side is None:
                out.append(frame.to_ndarray(format="rgb24"))
            else:
                h, w = frame.height, frame.width
                nh, nw = (short_side, round(w * short_side / h)) if h <= w else (round(h * short_side / w), short_side)
                out.append(frame.to_ndarray(format="rgb24", width=nw, height=nh, interpolation="BILINEAR"))
    return np.stack(out)


def naive_window_probs(model, frames, *, k: int, input_size: int, mean: Sequence[float], std: Sequence[float],
                       start: int = 0, end: int | None = None):
    """Class probabilities of frames[start:end] the plain way: the centre frame of each of K equal segments (TSN's
    test sampling, int(n / K * (i + 0.5))), the centre input_size square (frames already at the model's short side;
    offsets rounded as torchvision rounds them),
    scaled to 0..1, normalised, one forward pass, softmax. frames: uint8 (T, H, W, 3) -> (classes,)."""
    import torch

    clip = frames[start:end]
    n = len(clip)
    idx = [int(n / k * (i + 0.5)) for i in range(k)]
    h, w = clip.shape[1:3]
    top, left = round((h - input_size) / 2), round((w - input_size) / 2)  # torchvision's centre_crop
    x = torch.from_numpy(clip[idx, top: top + input_size, left: left + input_size].copy())  # (K, s, s, 3)
    x = x.permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)  # (K, 3, s, s)
    with torch.no_grad():
        return model.eval()(x[None]).logits.softmax(-1)[0]
