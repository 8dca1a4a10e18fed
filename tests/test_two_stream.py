"""Flow models and fusion: cross-modality init, the RGB+flow backbone, late-fusion arithmetic, `istpan data flow`
surviving SIGKILL, and a flow-stream training run on the synthetic set."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pausing import PausingChild
from references import charades_ap_loop
from videos import make_frames, make_video

from istpan.data import read_frames
from istpan.errors import UserError
from istpan.evaluation.fusion import fuse_scores, fused_metrics, parse_fuse_weights
from istpan.models import create_model
from istpan.models.backbones import build_backbone, first_conv
from istpan.training.optim import apply_partial_bn

REPO = Path(__file__).resolve().parents[1]


def _check_cross_modality(name: str, pretrained: Path, in_chans: int = 10) -> None:
    rgb = build_backbone(name, pretrained=pretrained)
    flow = build_backbone(name, pretrained=pretrained, in_chans=in_chans)
    w_rgb, w_flow = first_conv(rgb)[2].weight, first_conv(flow)[2].weight
    assert w_flow.shape == (w_rgb.shape[0], in_chans, *w_rgb.shape[2:])
    expected = (w_rgb[:, 0] + w_rgb[:, 1] + w_rgb[:, 2]) / 3  # (C_out, kh, kw): TSN's average over R, G, B
    for c in range(in_chans):
        assert torch.allclose(w_flow[:, c], expected, atol=1e-6)
    first = first_conv(rgb)[1]
    rest = {k: v for k, v in rgb.state_dict().items() if first not in k.split(".")}
    flow_state = flow.state_dict()
    assert all(torch.equal(v, flow_state[k]) for k, v in rest.items())  # every other weight is ImageNet's


def test_cross_modality_init_tiny_and_timm(tmp_path):
    for name, module in (("tiny", build_backbone("tiny")), ("mobilenetv2_100", None)):
        if module is None:  # timm: a full model's state dict, loaded through timm's feature wrapper
            timm = pytest.importorskip("timm")
            module = timm.create_model(name, pretrained=False)
        torch.save(module.state_dict(), tmp_path / f"{name}.pth")
        _check_cross_modality(name, tmp_path / f"{name}.pth")


def test_cross_modality_init_imagenet_mobilenetv2(mobilenet_v2_weights):
    _check_cross_modality("mobilenetv2", mobilenet_v2_weights)


def test_random_init_flow_conv_is_fresh_not_averaged():
    torch.manual_seed(0)
    w = first_conv(build_backbone("tiny", in_chans=6))[2].weight  # (16, 6, 3, 3)
    assert w.shape == (16, 6, 3, 3) and not torch.allclose(w[:, 0], w[:, 1])


def test_rgb_plus_flow_tsn_is_concatenated_consensus():
    torch.manual_seed(0)
    model = create_model("tsn_tiny", num_classes=4, modality="rgb+flow", flow_length=2, input_size=32).eval()
    video = torch.randn(2, 3, 3 + 4, 32, 32)  # (B, K, 3 + 2L, H, W)
    frames = video.flatten(0, 1)
    rgb = model.backbone.rgb(frames[:, :3])[-1].mean((-2, -1)).unflatten(0, (2, 3)).mean(1)  # (B, 128)
    flow = model.backbone.flow(frames[:, 3:])[-1].mean((-2, -1)).unflatten(0, (2, 3)).mean(1)
    expected = model.head(torch.cat([rgb, flow], dim=1))
    assert torch.allclose(model(video).logits, expected, atol=1e-5)
    assert model.pretrained_cfg["mean"][3:] == (0.5,) * 4 and len(model.pretrained_cfg["std"]) == 7


def test_rgb_plus_flow_istpan_attends_over_both_pyramids():
    model = create_model("istpan_tiny", num_classes=4, modality="rgb+flow", flow_length=2, input_size=32, num_scales=3)
    info = model.backbone.feature_info
    # two scales below the top from each stream, then the joint top map (128 + 128 channels)
    assert [info[i].num_chs for i in model.scales] == [32, 64, 32, 64, 256]
    assert len(model.attention.proj) == 5
    out = model(torch.randn(1, 2, 7, 32, 32))
    assert out.attn.shape[:3] == (1, model.model_options["d"], 2)


def test_partial_bn_keeps_first_bn_of_each_stream():
    model = create_model("istpan_tiny", num_classes=3, modality="rgb+flow", flow_length=1, input_size=32)
    model.train()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert apply_partial_bn(model) == len(bns) - 2
    firsts = [next(m for m in s.modules() if isinstance(m, torch.nn.BatchNorm2d)) for s in model.backbone.streams]
    assert all(bn.training and bn.weight.requires_grad for bn in firsts)
    assert sum(bn.training for bn in bns) == 2


def test_late_fusion_matches_hand_computation():
    rgb = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    flow = torch.tensor([[0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    labels = torch.tensor([1, 2, 2])
    fused = fuse_scores([rgb, flow], [1.0, 1.5])
    # by hand: (1 · rgb + 1.5 · flow) / 2.5, e.g. video 0 class 1: (0.3 + 1.05) / 2.5 = 0.54
    assert fused[0].tolist() == pytest.approx([0.36, 0.54, 0.10])
    assert fused[1].tolist() == pytest.approx([0.14, 0.26, 0.60])
    results = [dict(scores=s, labels=labels, indices=torch.tensor([0, 1, 2]), num_videos=3, skipped=0)
               for s in (rgb, flow)]
    single = fused_metrics(results, [1.0, 1.5], multi_label=False)
    assert single["top1"] == pytest.approx(100.0)  # rgb alone: 1 of 3 right; flow alone: 3 of 3; fused: 3 of 3
    rgb_only = fused_metrics(results, [1.0, 0.0], multi_label=False)
    assert rgb_only["top1"] == pytest.approx(100 / 3)
    # a video only one model scored (the other could not read it) is left out and counted as skipped
    results[1] = dict(scores=flow[1:], labels=labels[1:], indices=torch.tensor([1, 2]), num_videos=2, skipped=1)
    partial = fused_metrics(results, [1.0, 1.5], multi_label=False)
    assert partial["num_videos"] == 2 and partial["skipped"] == 1 and partial["indices"].tolist() == [1, 2]


def test_late_fusion_multilabel_map_matches_hand_ap():
    a = torch.tensor([[0.9, 0.2], [0.3, 0.8], [0.6, 0.1], [0.2, 0.4]])
    b = torch.tensor([[0.5, 0.1], [0.7, 0.6], [0.4, 0.9], [0.1, 0.3]])
    labels = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0]])
    results = [dict(scores=s, labels=labels, indices=torch.arange(4), num_videos=4, skipped=0) for s in (a, b)]
    out = fused_metrics(results, [2.0, 1.0], multi_label=True)
    fused = (2 * a + b) / 3
    aps = [charades_ap_loop(fused[:, c].tolist(), labels[:, c].tolist()) for c in range(2)]
    assert out["mAP"] == pytest.approx(100 * sum(aps) / 2)


def test_fuse_weights_are_checked():
    assert parse_fuse_weights(None, 2) == [1.0, 1.0]
    with pytest.raises(UserError, match="2 weight"):
        parse_fuse_weights([1.0, 1.5], 3)
    with pytest.raises(UserError, match="not all 0"):
        parse_fuse_weights([0.0, 0.0], 2)


def _flow_config(tmp_path: Path, videos: list[Path]) -> Path:
    (tmp_path / "list.txt").write_text("".join(f"{v.name} a\n" for v in videos))
    (tmp_path / "classes.txt").write_text("a\n")
    cfg = tmp_path / "flow.yaml"
    cfg.write_text(f"data: {{format: list, root: {videos[0].parent}, train_annotations: {tmp_path / 'list.txt'}, "
                   f"classes: {tmp_path / 'classes.txt'}, short_side: 0}}\n")
    return cfg


# The child stops after writing the 5th flow frame of the second video: one video complete, one half-written.
_FLOW_PATCH = """
from istpan.data.tools import flow
save, calls = flow.save_flow_frame, []
def paused_save(*args, **kwargs):
    save(*args, **kwargs)
    calls.append(1)
    if len(calls) == 39 + 5:
        pause()
flow.save_flow_frame = paused_save
"""


@pytest.mark.slow
def test_data_flow_resumes_after_sigkill_without_half_written_video(tmp_path):
    first = make_video(tmp_path / "v" / "0.mp4", make_frames(40, (64, 64)))
    videos = [first, *(Path(shutil.copy(first, tmp_path / "v" / f"{i}.mp4")) for i in (1, 2))]
    out = tmp_path / "flow"
    argv = ["data", "flow", "--config", str(_flow_config(tmp_path, videos)), "--out", str(out), "--algorithm", "dis",
            "--workers", "1", "--no-progress"]
    child = PausingChild(tmp_path / "pause", patch=_FLOW_PATCH, argv=argv, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    child.wait_paused()
    child.proc.send_signal(signal.SIGKILL)
    child.proc.wait()
    partial = list(out.glob(".partial-*"))
    assert [(p.name, len(list(p.iterdir()))) for p in partial] == [(".partial-1", 2 * 5)]
    finished = {p.name: {f.name: f.stat().st_mtime_ns for f in p.iterdir()} for p in out.glob("[0-9]")}
    assert list(finished) == ["0"] and len(finished["0"]) == 2 * 39  # a folder that exists is complete

    cmd = [sys.executable, "-m", "istpan.cli.main", *argv]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "already done 1" in rerun.stdout
    assert not list(out.glob(".partial-*"))
    for i in range(3):
        assert len(list((out / str(i)).iterdir())) == 2 * 39
    for name, files in finished.items():  # finished videos were not redone
        assert {f.name: f.stat().st_mtime_ns for f in (out / name).iterdir()} == files


@pytest.fixture(scope="module")
def two_streams(tmp_path_factory):
    """An RGB and a flow checkpoint trained briefly on the same small synthetic set (flow folders by Farneback)."""
    from istpan.config import Config
    from istpan.data.tools import synth
    from istpan.data.tools.flow import FlowJob, extract_flow, flow_folder
    from istpan.data.video_dataset import load_split
    from istpan.training.train import train

    tmp = tmp_path_factory.mktemp("two_streams")
    data = synth.generate(tmp / "synth", seed=1, num_videos=16, size=32, num_frames=12, fps=8)
    runs = {}
    for modality in ("rgb", "flow"):
        cfg = Config()
        d = cfg.data
        d.format, d.root, d.modality, d.flow_length, d.flow_root = "synthetic", str(data), modality, 3, str(tmp / "f")
        d.num_frames = d.test_num_frames = 3
        d.input_size, d.short_side, d.train_crop, d.flip, d.num_workers = 32, 32, "center", False, 0
        d.flow_algorithm = "farneback"  # what `istpan data flow` uses by default, and predict on the fly
        if modality == "flow":
            videos = [r.path for s in ("train", "val") for r in load_split(d, s).records]
            extract_flow([FlowJob(v, str(flow_folder(v, root=d.root, out=d.flow_root))) for v in videos],
                         algorithm=d.flow_algorithm, short_side=None, progress=False)
        cfg.model.name, cfg.model.options = "istpan_tiny", {"input_size": 32}
        cfg.train.epochs, cfg.train.batch_size, cfg.train.partial_bn, cfg.train.tensorboard = 1, 4, False, False
        cfg.train.out_dir = str(tmp / modality)
        runs[modality] = (cfg, train(cfg, progress=False))
    return runs


def test_flow_stream_trains_on_the_synthetic_set(two_streams):
    from istpan.data.video_dataset import load_split
    from istpan.files.load import load_model

    cfg, result = two_streams["flow"]
    d = cfg.data
    model, meta = load_model(result["last_checkpoint"])
    assert meta.model_options["modality"] == "flow" and first_conv(model.backbone)[2].in_channels == 6
    assert len(meta.preprocessing.mean) == 6
    n_val = len(load_split(d, "val").records)
    assert result["history"][-1]["val_num_videos"] == n_val and result["history"][-1]["val_skipped"] == 0

    # predict computes the flow from the video on the fly: the inputs (then the scores) eval got from the flow folders.
    # The inputs, because this briefly trained model scores every video alike: a shuffled video's scores pass too.
    from istpan import Predictor
    from istpan.data import build_dataset, build_loader
    from istpan.evaluation.evaluate import evaluate

    val = build_dataset(d, split="val", train=False, mean=meta.preprocessing.mean,
                        std=meta.preprocessing.std)
    predictor = Predictor(model, meta)
    pre = predictor.preprocessing
    folders = [val[i]["video"] for i in range(len(val))]  # (K, 6, 32, 32) each, from the JPEG flow folders
    on_the_fly = [pre.to_input(pre.read(r.path)[0]) for r in val.records]
    for i, x in enumerate(folders):
        assert (x - on_the_fly[i]).abs().mean() < 0.01  # JPEG's round trip: measured <= 0.003
        assert min((x - y).abs().mean() for j, y in enumerate(on_the_fly) if j != i) > 0.02  # other videos: >= 0.039
    ref = evaluate(model, build_loader(val, batch_size=4, train=False, num_workers=0, seed=0), multi_label=False,
                   return_scores=True)
    got = predictor.scores([val.records[int(i)].path for i in ref["indices"]])
    assert torch.allclose(got, ref["scores"], atol=0.02)


@pytest.fixture(scope="module")
def spread_streams(two_streams, tmp_path_factory):
    """The two checkpoints with seeded noise on their weights (0.1 sd; rgb seed 0, flow seed 10): scores far from
    uniform, so fusing with other weights, or one stream alone, changes the metrics (checked where used)."""
    from istpan.files.checkpoint import load_checkpoint, save_checkpoint

    tmp, paths = tmp_path_factory.mktemp("spread"), {}
    for seed, modality in ((0, "rgb"), (10, "flow")):
        state = load_checkpoint(two_streams[modality][1]["last_checkpoint"])
        g = torch.Generator().manual_seed(seed)
        state["model"] = {k: v + 0.1 * torch.randn(v.shape, generator=g)
                          if v.is_floating_point() and "running_" not in k else v for k, v in state["model"].items()}
        paths[modality] = str(save_checkpoint(state, tmp / f"{modality}.pt"))
    return paths


def test_eval_and_predict_fuse_two_checkpoints(spread_streams, tmp_path, capsys):
    import json

    from istpan import Predictor
    from istpan.cli.main import main
    from istpan.evaluation.evaluate import evaluate_checkpoint
    from istpan.evaluation.metrics import single_label_metrics

    rgb, flow = spread_streams["rgb"], spread_streams["flow"]
    each = [evaluate_checkpoint(c, return_scores=True) for c in (rgb, flow)]
    keys = ("top1", "top5", "mean_class_acc")

    def by_hand(w_rgb: float, w_flow: float) -> tuple[float, ...]:
        fused = (w_rgb * each[0]["scores"] + w_flow * each[1]["scores"]) / (w_rgb + w_flow)  # (N, C)
        metrics = single_label_metrics(fused, each[0]["labels"])
        return tuple(metrics[k] for k in keys)

    expected = by_hand(1.0, 1.5)
    # the check can fail: swapped weights, equal weights, or one stream alone give other metrics on these models
    assert all(by_hand(*w) != pytest.approx(expected) for w in ((1.5, 1.0), (1.0, 1.0), (1.0, 0.0), (0.0, 1.0)))
    out = tmp_path / "fused.json"
    assert main(["eval", "--checkpoint", rgb, "--checkpoint", flow, "--fuse-weights", "1", "1.5",
                 "--json", str(out)]) == 0
    fused = json.loads(out.read_text())
    assert tuple(fused[k] for k in keys) == pytest.approx(expected) and fused["fuse_weights"] == [1.0, 1.5]
    assert [s["top1"] for s in fused["streams"]] == pytest.approx([e["top1"] for e in each])
    assert "late fusion" in capsys.readouterr().out

    videos = each[0]["videos"][:3]
    probs = [Predictor.from_checkpoint(c).scores(videos) for c in (rgb, flow)]
    hand = (probs[0] + 1.5 * probs[1]) / 2.5
    capsys.readouterr()
    assert main(["predict", *videos, "--checkpoint", rgb, "--checkpoint", flow, "--fuse-weights", "1", "1.5",
                 "--json", "--topk", "1"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [r["top"][0]["index"] for r in got] == hand.argmax(1).tolist()
    assert [r["top"][0]["score"] for r in got] == pytest.approx(hand.max(1).values.tolist(), abs=1e-5)
    assert main(["eval", "--checkpoint", rgb, "--checkpoint", flow, "--fuse-weights", "1", "1", "1"]) == 2
    assert "--fuse-weights: 3 weight(s) for 2 checkpoints" in capsys.readouterr().err  # one line, no traceback


def test_reversal_pair_metrics_by_hand():
    from istpan.data.tools.synth import CLASSES
    from istpan.experiments.two_stream import pair_class_top1, within_pair_accuracy

    left, right, blink = CLASSES.index("move_left"), CLASSES.index("move_right"), CLASSES.index("blink")
    labels = torch.tensor([left, left, right, right, blink])
    pred = torch.tensor([left, right, right, blink, blink])  # pair videos: right, wrong member, right, other class
    scores = torch.nn.functional.one_hot(pred, len(CLASSES)).float()
    assert pair_class_top1(scores, labels) == pytest.approx(50.0)  # 2 of the 4 pair videos
    assert within_pair_accuracy(scores, labels) == pytest.approx(200 / 3)  # 2 of the 3 predicted inside their pair


def test_flow_checkpoint_with_rgb_data_or_rgb_only_tools_is_one_line(two_streams, capsys):
    from istpan.cli.main import main

    flow = two_streams["flow"][1]["last_checkpoint"]
    assert main(["eval", "--checkpoint", flow, "data.modality=rgb"]) == 2
    assert "data.modality=rgb with data.flow_length=3 gives 3 input channels but the model takes 6" in \
        capsys.readouterr().err
    some = next(Path(two_streams["flow"][0].data.root).rglob("*.mp4"))
    assert main(["predict", str(some), "--checkpoint", flow, "--window", "4"]) == 2
    assert "--window and --max-frames take RGB checkpoints" in capsys.readouterr().err


def test_flow_checkpoint_exports_to_torchscript(spread_streams, tmp_path):
    from istpan.files.export import export_model
    from istpan.files.load import load_model

    model, meta = load_model(spread_streams["flow"])
    result = export_model(model, meta, tmp_path / "flow.pt", format="torchscript")
    assert result["input_shape"][2] == 6
    exported = torch.jit.load(result["path"])
    x = torch.randn(2, 3, 6, 32, 32, generator=torch.Generator().manual_seed(1))  # (B, K, 2L, H, W): not the check's
    with torch.no_grad():
        want, got = model(x).logits, exported(x)  # (2, classes) logits
    assert (want[0] - want[1]).abs().max() > 1e-2  # two inputs, two answers: the comparison can fail
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_rgb_plus_flow_predict_computes_both_streams_from_the_file(tmp_path):
    from istpan import Predictor
    from istpan.config import DataConfig
    from istpan.files.checkpoint import build_meta

    video = make_video(tmp_path / "a.mp4", make_frames(10, (40, 40)))
    data = DataConfig(modality="rgb+flow", flow_length=2, test_num_frames=3, input_size=32, short_side=32,
                      flow_algorithm="farneback")
    torch.manual_seed(0)
    model = create_model("istpan_tiny", num_classes=2, modality="rgb+flow", flow_length=2, input_size=32).eval()
    with torch.no_grad():  # scores far from 1/2
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    predictor = Predictor(model, build_meta(model, class_names=["a", "b"], data_cfg=data))
    views, starts, n = predictor.preprocessing.read(video)
    assert views.shape == (3, 32, 32, 3 + 4) and n == 10 and starts == [1, 4, 6]  # 3 centres over 8 starts
    # by hand: each stack's centre RGB frame, then Farneback flow (OpenCV called directly, the sample's parameters)
    # between consecutive grey frames, clipped to +-20 px, mapped to 0..255 and interleaved x1, y1, x2, y2
    import cv2

    frames = read_frames(video, list(range(10)), short_side=32).numpy()  # (10, 32, 32, 3)
    grey = np.rint(frames @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).astype(np.uint8)
    stacks = []
    for s in starts:
        channels = [frames[s + 1].transpose(2, 0, 1)]  # (3, H, W): the centre of a stack of L = 2
        for t in (s, s + 1):
            flow = cv2.calcOpticalFlowFarneback(grey[t], grey[t + 1], None, 0.5, 3, 15, 3, 5, 1.2, 0)  # (H, W, 2)
            code = np.rint((np.clip(flow, -20, 20) + 20) * 255 / 40).astype(np.uint8)
            channels += [code[..., 0][None], code[..., 1][None]]
        stacks.append(np.concatenate(channels))  # (7, H, W)
    pre = predictor.preprocessing
    clip = pre.to_input(pre.view(torch.from_numpy(np.stack(stacks)).movedim(1, -1)))  # (3, 7, 32, 32)
    with torch.no_grad():
        want = model(clip[None]).logits.softmax(-1)  # (1, 2)
    scores = predictor.scores([video])
    assert (want - 0.5).abs().max() > 0.01  # not a coin toss: a wrong input would show
    torch.testing.assert_close(scores, want, atol=1e-5, rtol=0)
