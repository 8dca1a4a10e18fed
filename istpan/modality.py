"""What one segment of a clip is made of, shared by the data pipeline and the models: RGB, flow, or both.

    rgb       3 channels: one RGB frame per segment (the default)
    flow      2L channels: a stack of L consecutive flow frames, interleaved x_1, y_1, ..., x_L, y_L (TSN's order)
    rgb+flow  3 + 2L channels: the RGB frame at the stack's centre, then its flow stack; one tensor so that one crop
              and one flip apply to both streams (feature-level fusion needs them aligned) and the model contract
              `model(video (B, K, C, H, W))` stays one tensor

Flow normalisation is TSN's: the 0..255 encoding of ±bound (128 = no motion) scaled to [0, 1], minus 0.5, over 0.226
(the mean of ImageNet's RGB stds), so flow inputs have roughly the spread RGB inputs have for the same filters.
MMAction2 uses (v - 128) / 128 instead; the difference is a constant factor the first convolution absorbs.
"""

from __future__ import annotations

__all__ = ["DEFAULT_FLOW_LENGTH", "FLOW_ALGORITHMS", "FLOW_MEAN", "FLOW_STD", "IMAGENET_MEAN", "IMAGENET_STD",
           "MODALITIES", "flow_x_channels", "in_channels", "input_stats"]

MODALITIES = ("rgb", "flow", "rgb+flow")
FLOW_ALGORITHMS = ("tvl1", "dis", "farneback")  # istpan/data/flow/compute.py computes them
DEFAULT_FLOW_LENGTH = 5  # L, TSN's
# ImageNet RGB statistics of [0, 1] pixels: the one copy (data transforms, Preprocessing and backbones import it)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FLOW_MEAN = 0.5
FLOW_STD = 0.226  # mean of IMAGENET_STD, as TSN


def _check(modality: str, flow_length: int) -> None:
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality '{modality}' (choose from {', '.join(MODALITIES)})")
    if flow_length < 1:
        raise ValueError(f"flow_length must be >= 1, got {flow_length}")


def in_channels(modality: str, flow_length: int = DEFAULT_FLOW_LENGTH) -> int:
    """Channels of one segment's input tensor."""
    _check(modality, flow_length)
    return {"rgb": 3, "flow": 2 * flow_length, "rgb+flow": 3 + 2 * flow_length}[modality]


def flow_x_channels(modality: str, flow_length: int = DEFAULT_FLOW_LENGTH) -> tuple[int, ...]:
    """Indices of the horizontal flow channels: a horizontal flip must also negate them (255 - u on the encoding)."""
    first = {"rgb": None, "flow": 0, "rgb+flow": 3}[modality]
    return () if first is None else tuple(first + 2 * i for i in range(flow_length))


def input_stats(modality: str, flow_length: int = DEFAULT_FLOW_LENGTH,
                rgb_mean: tuple[float, ...] = IMAGENET_MEAN,
                rgb_std: tuple[float, ...] = IMAGENET_STD) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) of the normalisation, in the channel order above."""
    _check(modality, flow_length)
    flow_mean, flow_std = (FLOW_MEAN,) * (2 * flow_length), (FLOW_STD,) * (2 * flow_length)
    if modality == "rgb":
        return tuple(rgb_mean), tuple(rgb_std)
    if modality == "flow":
        return flow_mean, flow_std
    return (*rgb_mean, *flow_mean), (*rgb_std, *flow_std)
