"""`istpan ablate` in a tiny configuration writes both files; the redundancy measure matches its definition."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from istpan.cli.main import main
from istpan.data.tools import synth
from istpan.experiments.ablation import ABLATION, rows
from istpan.experiments.runs import glimpse_redundancy

FULL = "N=3 + l_interactive + l_attn (full)"


@pytest.mark.slow
def test_quick_ablation_writes_markdown_and_json(tmp_path: Path, capsys) -> None:
    out = tmp_path / "abl"
    common = ["ablate", "--quick", "--seeds", "2", "--out", str(out), "--only"]
    assert main([*common, "TSN"]) == 0
    first = json.loads((out / "ablation.json").read_text())
    # a second run into the same folder trains only what is missing: TSN's results are kept as they were
    assert main([*common, "TSN", FULL]) == 0
    result = json.loads((out / "ablation.json").read_text())
    assert result["rows"][0]["per_seed"] == first["rows"][0]["per_seed"]
    markdown = (out / "ablation.md").read_text()
    assert markdown in capsys.readouterr().out

    by_name = {r["name"]: r for r in result["rows"]}
    assert set(by_name) == {"TSN average consensus", FULL}
    for name, row in by_name.items():
        assert row["seeds_done"] == 2 and f"| {name} |" in markdown
        values = [m["top1"] for m in row["per_seed"]]
        assert row["top1"]["mean"] == pytest.approx(sum(values) / 2)
        assert row["top1"]["std"] == pytest.approx(float(torch.tensor(values).std()))
        mean, std = statistics.mean(values), statistics.stdev(values)  # the table's cell, by hand from the seeds
        assert f"| {name} | {mean:.1f} ± {std:.1f} |" in markdown
    assert "redundancy" not in by_name["TSN average consensus"]  # no attention, nothing to measure
    assert 0.0 <= by_name[FULL]["redundancy"]["mean"] <= 1.0
    assert {f"top1_test_k{k}" for k in (3, 8, 16, 25)} <= set(by_name[FULL])
    assert "| test K | 3 | 8 | 16 | 25 |" in markdown
    assert (out / "data_untrimmed_seed1" / "ground_truth.json").is_file()


def test_unknown_row_is_a_user_error(tmp_path: Path, capsys) -> None:
    assert main(["ablate", "--quick", "--seeds", "1", "--out", str(tmp_path), "--only", "nonsense"]) == 2
    assert "no ablation row" in capsys.readouterr().err


def test_rows_cover_the_issue_table() -> None:
    """Each row of the issue's table is trained with the configuration its name claims: the model built from the row's
    options has that scale count / reduction / fusion, and the loss weights are what the name says."""
    from istpan.models import create_model

    by_name = {r.name: r for r in rows(beta=0.1, gamma=0.01)}
    built = {name: create_model(r.model, num_classes=8, input_size=ABLATION.size, **r.options)
             for name, r in by_name.items()}

    def only(needle: str):
        matches = [n for n in by_name if needle in n and "untrimmed" not in n and "ours" not in n]
        assert len(matches) == 1, (needle, matches)
        return by_name[matches[0]], built[matches[0]].model_options

    tsn, _ = only("TSN")
    assert tsn.model == "tsn_tiny" and (tsn.beta, tsn.gamma) == (0.0, 0.0)
    single, _ = only("single-scale")
    assert single.model == "istpan_single_tiny"
    for n in (2, 3):
        row, opts = only(f"pyramid attention N={n}")
        assert opts["num_scales"] == n and (row.beta, row.gamma) == (0.0, 0.0)
    row, opts = by_name["N=3 + l_interactive"], built["N=3 + l_interactive"].model_options  # "(full)" contains it too
    assert opts["num_scales"] == 3 and row.beta > 0 and row.gamma == 0.0
    row, opts = only("(full)")
    assert opts["num_scales"] == 3 and row.beta > 0 and row.gamma > 0 and row.test_k
    for r in ("max", "bilinear", "strided"):
        row, opts = only(f"R={r}")
        assert opts["reduce"] == r and opts["num_scales"] == 3
    for f in ("sum", "max", "learned"):
        row, opts = only(f"F={f}")
        assert opts["fuse"] == f and opts["num_scales"] == 3
    untrimmed = {n: r for n, r in by_name.items() if n.startswith("untrimmed")}
    assert untrimmed and all(r.untrimmed for r in untrimmed.values())
    assert not any(r.untrimmed for n, r in by_name.items() if n not in untrimmed)
    assert {r.model for r in untrimmed.values()} == {"tsn_tiny", "istpan_tiny"}
    # no two rows train the same thing under different names
    keys = [(r.model, sorted(built[n].model_options.items(), key=str), r.beta, r.gamma, r.untrimmed)
            for n, r in by_name.items()]
    assert len(set(map(str, keys))) == len(keys)


def test_glimpse_redundancy_matches_the_definition() -> None:
    """Naive loop over glimpse pairs vs the batched computation, plus the two extremes (identical, disjoint rows)."""
    torch.manual_seed(0)
    attn = torch.rand(2, 5, 3, 2, 2).softmax(-1)  # (B, d, K, h, w)
    model = lambda video: SimpleNamespace(attn=attn)  # noqa: E731
    model.eval = lambda: None
    got = glimpse_redundancy(model, [{"video": torch.zeros(2)}])
    naive = []
    for b in range(2):
        rows_ = [attn[b, m].flatten() / attn[b, m].flatten().norm() for m in range(5)]
        naive += [abs(float(rows_[m] @ rows_[n])) for m in range(5) for n in range(5) if m != n]
    assert got == pytest.approx(sum(naive) / len(naive), rel=1e-5)

    same = torch.ones(1, 4, 2, 2, 2)
    model_same = lambda video: SimpleNamespace(attn=same)  # noqa: E731
    model_same.eval = lambda: None
    assert glimpse_redundancy(model_same, [{"video": None}]) == pytest.approx(1.0)
    disjoint = torch.eye(4).view(1, 4, 1, 2, 2)
    model_disjoint = lambda video: SimpleNamespace(attn=disjoint)  # noqa: E731
    model_disjoint.eval = lambda: None
    assert glimpse_redundancy(model_disjoint, [{"video": None}]) == pytest.approx(0.0)


# ---------------------------------------------------------------------------------------------------------------
# The pretrained regime: cached features, intervals, the cluttered scene, the quick command


def test_model_from_cached_stage_maps_is_the_model() -> None:
    """Training on cached stage maps is training the same model: model(video) == forward_clip of the features built
    from the backbone's maps, given only the stages the model uses (what the cache holds)."""
    from istpan.models import create_model

    torch.manual_seed(0)
    video = torch.randn(2, 3, 3, 64, 64)  # (B, K, 3, H, W)
    for name, options in (("istpan_mobilenetv2", dict(num_scales=3)), ("tsn_mobilenetv2", {}),
                          ("istpan_mobilenetv2", dict(time_encoding="fourier", head="glimpse"))):
        model = create_model(name, num_classes=8, input_size=64, **options).eval()
        with torch.no_grad():
            maps = model.backbone(video.flatten(0, 1))
            cached = [m if i in model.scales else None for i, m in enumerate(maps)]  # only what the cache holds
            a = model(video)
            b = model.forward_clip(model.frame_features_from_maps(cached).unflatten(0, (2, 3)))
        torch.testing.assert_close(a.logits, b.logits)
        if a.attn is not None:
            torch.testing.assert_close(a.attn, b.attn)


def test_intervals_match_their_textbook_definitions() -> None:
    from istpan.experiments.stats import bootstrap_paired, mean_ci, paired_ci, verdict

    values = [50.0, 52.0, 47.0, 55.0, 51.0]
    ci = mean_ci(values)
    mean = sum(values) / 5
    sd = (sum((v - mean) ** 2 for v in values) / 4) ** 0.5
    assert ci["mean"] == pytest.approx(mean) and ci["std"] == pytest.approx(sd)
    assert ci["hi"] - ci["mean"] == pytest.approx(2.776 * sd / 5**0.5)  # t_{0.975, 4}
    other = [48.0, 49.0, 47.5, 50.0, 49.0]
    assert paired_ci(values, other) == mean_ci([a - b for a, b in zip(values, other)])
    assert verdict(dict(lo=0.5, hi=3.0)) == "holds"
    assert verdict(dict(lo=-3.0, hi=-0.2)) == "does not hold"
    assert verdict(dict(lo=-0.6, hi=0.8)) == "does not hold"  # no effect worth having, at this power
    assert verdict(dict(lo=-2.0, hi=3.0)) == "too small to tell at this power"
    right = torch.ones(3, 40, dtype=torch.bool)
    assert bootstrap_paired(right, ~right) == dict(mean=100.0, lo=100.0, hi=100.0)
    mixed = torch.rand(3, 400, generator=torch.Generator().manual_seed(1)) < 0.5
    boot = bootstrap_paired(mixed, torch.zeros_like(mixed))
    assert boot["mean"] == pytest.approx(100 * mixed.float().mean().item())
    assert boot["lo"] < boot["mean"] < boot["hi"]


def test_cluttered_scene_small_actor_deterministic_in_parallel(tmp_path: Path) -> None:
    from istpan.data.tools import synth

    spec = synth.SynthSpec(seed=5, size=112, num_frames=6, scene="cluttered")
    for i, cls in enumerate(synth.CLASSES):
        frames, boxes, span = synth._render_video(spec, i, cls)
        again, _, _ = synth._render_video(spec, i, cls)
        assert frames.shape == (6, 112, 112, 3) and span == (0, 6) and (frames == again).all()
        for box in boxes:
            if box is not None:
                assert 0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1
                assert (box[2] - box[0]) * (box[3] - box[1]) <= 0.05  # the actor covers at most 5 % of the frame
    common = dict(seed=2, num_videos=8, size=48, num_frames=4, scene="cluttered")
    one = synth.generate(tmp_path / "one", workers=1, **common)
    two = synth.generate(tmp_path / "two", workers=2, **common)
    # same split, labels and per-frame boxes whichever process drew a video (the frames are compared above; the
    # encoder's byte-determinism is tests/test_synth.py's)
    for name in ("ground_truth.json", "train.txt", "val.txt"):
        assert (one / name).read_bytes() == (two / name).read_bytes()
    assert len(list(two.rglob("*.mp4"))) == 8


@pytest.mark.slow
def test_quick_pretrained_ablation(tmp_path: Path, capsys, mobilenet_v2_weights: Path) -> None:
    """`istpan ablate --regime pretrained --quick` end to end: data, cache, rows, intervals, resume."""
    from istpan.data import read_frames
    from istpan.experiments.features import FeatureCache
    from istpan.models import create_model

    out = tmp_path / "abl"
    args = ["ablate", "--regime", "pretrained", "--weights", str(mobilenet_v2_weights), "--quick", "--out", str(out),
            "--epochs", "1", "--only", "N=3 + l_attn ("]
    assert main(args) == 0
    result = json.loads((out / "pretrained_ablation.json").read_text())
    by = {r["name"]: r for r in result["rows"]}
    assert set(by) == {"TSN average consensus", "pyramid attention N=3", "N=3 + l_attn (γ=0.01)"}
    markdown = (out / "pretrained_ablation.md").read_text()
    assert markdown in capsys.readouterr().out
    tsn, n3 = by["TSN average consensus"]["per_seed"], by["pyramid attention N=3"]["per_seed"]
    assert [m["seed"] for m in n3] == [0, 1]
    diffs = [a["top1"] - b["top1"] for a, b in zip(n3, tsn)]
    assert by["pyramid attention N=3"]["vs_tsn"]["mean"] == pytest.approx(sum(diffs) / 2)

    def interval(values: list[float], sign: str = "") -> str:  # mean [95 % CI], 2 seeds: t_{0.975, 1} = 12.706
        mean, half = statistics.mean(values), 12.706 * statistics.stdev(values) / 2 ** 0.5
        return f"{mean:{sign}.1f} [{mean - half:{sign}.1f}, {mean + half:{sign}.1f}]"

    row = next(line for line in markdown.splitlines() if line.startswith("| pyramid attention N=3 |")).split(" | ")
    assert row[1] == interval([m["top1"] for m in n3]) and row[2] == interval(diffs, "+")  # the cells, by hand
    for m in n3:
        assert len(m["correct"]) == result["num_val"] and m["top1"] == pytest.approx(
            100 * m["correct"].count("1") / result["num_val"])
        assert len(m["curve"]) == 1 and 0 <= m["pointing_game"] <= 100 and "top1_k25" in m
    assert "pointing_game" not in tsn[0] and {c["claim"] for c in result["claims"]} >= {
        "attention beats average pooling", "l_attn helps", "any K at test (trained K=8)"}
    # the cache holds what the backbone computes on the decoded frames (float16)
    cache = FeatureCache.load(out / "features" / "val")
    gt = synth.load_ground_truth(out / "data")
    rel = sorted(r for r, v in gt["videos"].items() if v["split"] == "val")[0]
    model = create_model("tsn_mobilenetv2", num_classes=8, pretrained=mobilenet_v2_weights, input_size=64).eval()
    frames = torch.as_tensor(read_frames(out / "data" / rel, cache.frames)).permute(0, 3, 1, 2).float() / 255
    mean, std = (torch.tensor(v)[:, None, None] for v in (model.pretrained_cfg["mean"], model.pretrained_cfg["std"]))
    with torch.no_grad():
        top = model.backbone((frames - mean) / std)[4]  # (T, 1280, 2, 2)
    got = cache.maps(torch.tensor([0]), torch.arange(len(cache.frames))[None])[4]
    torch.testing.assert_close(got, top, atol=2e-2, rtol=1e-2)
    # a rerun of the same setup trains nothing again
    assert main(args) == 0
    assert json.loads((out / "pretrained_ablation.json").read_text())["rows"][1]["per_seed"] == n3


def test_precomputed_frame_features_give_the_same_model_outputs() -> None:
    """FrameFeatures (R applied once, sliced per model) == each model's own frame_features_from_maps per batch."""
    import numpy as np

    from istpan.experiments.cached import FrameFeatures, _forward
    from istpan.experiments.features import FeatureCache
    from istpan.models import create_model

    rng = np.random.default_rng(0)
    shapes = {2: (32, 8, 8), 3: (96, 4, 4), 4: (1280, 2, 2)}  # MobileNetV2 stages 2-4 at 64 px
    arrays = [rng.standard_normal((3, 5, *shapes[j])).astype(np.float16) for j in (2, 3, 4)]
    cache = FeatureCache([2, 3, 4], 5, arrays, torch.tensor([0, 1, 2]), list(range(5)), torch.zeros(3, 5, 4), 5)
    pre = FrameFeatures(cache, reduce="avg")
    videos, frames = torch.tensor([2, 0]), torch.tensor([[0, 2, 4], [1, 1, 3]])
    for name, options in (("istpan_mobilenetv2", dict(num_scales=3)), ("istpan_mobilenetv2", dict(num_scales=2)),
                          ("istpan_single_mobilenetv2", {}), ("tsn_mobilenetv2", {}),
                          ("istpan_mobilenetv2", dict(num_scales=3, reduce="max"))):  # not served: stage maps
        model = create_model(name, num_classes=8, input_size=64, **options).eval()
        with torch.no_grad():
            a, b = _forward(model, pre, videos, frames), _forward(model, cache, videos, frames)
        # the precomputed features are stored as float16 after R: equal to that rounding
        torch.testing.assert_close(a.logits, b.logits, atol=1e-3, rtol=1e-3)


@pytest.mark.slow
def test_quick_finetune(tmp_path: Path, capsys, mobilenet_v2_weights: Path) -> None:
    """`istpan ablate --regime finetune --quick`: the main rows through `istpan train`'s loop (trained at K = 4,
    curve and final evaluation at K = 8), per-video correctness, paired intervals, resume."""
    from istpan.config import load_config
    from istpan.experiments.finetune import FINETUNE_ROWS

    out = tmp_path / "ft"
    args = ["ablate", "--regime", "finetune", "--weights", str(mobilenet_v2_weights), "--quick", "--out", str(out),
            "--only", "TSN", "pyramid attention N=3", "N=3 + time order"]
    assert main(args) == 0
    result = json.loads((out / "finetune" / "finetune.json").read_text())
    by = {r["name"]: r for r in result["rows"]}
    assert set(by) == {FINETUNE_ROWS[0], FINETUNE_ROWS[1], FINETUNE_ROWS[4]}
    assert result["num_val"] == 8 and result["num_train"] == 8  # quick: every val video (1 per class), 1 train
    for row in by.values():
        (m,) = row["per_seed"]
        assert len(m["curve"]) == len(m["train_loss"]) == 2 and len(m["correct"]) == 8
        assert m["top1"] == pytest.approx(100 * m["correct"].count("1") / 8)
    n3, tsn = by[FINETUNE_ROWS[1]], by[FINETUNE_ROWS[0]]
    assert n3["vs_tsn"]["mean"] == pytest.approx(n3["per_seed"][0]["top1"] - tsn["per_seed"][0]["top1"])
    assert n3["vs_tsn_bootstrap_per_seed"]["0"]["mean"] == pytest.approx(n3["vs_tsn"]["mean"])
    assert {c["claim"] for c in result["claims"]} >= {"attention beats average pooling",
                                                      "time order helps (ours, not the paper's)"}
    markdown = (out / "finetune" / "finetune.md").read_text()
    assert markdown in capsys.readouterr().out and "| N=3 + time order (ours) |" in markdown
    assert "train K = 4, test K = 8" in markdown and "| TSN average consensus | 0 |" in markdown  # every run
    from istpan.experiments.pretrained_report import format_markdown

    assert format_markdown(result, header=["-"]).split("\n", 1)[1] in markdown  # the frozen table's layout
    cfg = load_config(out / "finetune" / "runs" / "seed0" / "pyramid_attention_N_3" / "config.yaml")
    assert (cfg.data.num_frames, cfg.data.test_num_frames, cfg.train.partial_bn) == (4, 8, True)
    assert cfg.optim.backbone_lr_mult == 0.01
    # a rerun of the same setup trains nothing again
    assert main(args) == 0
    assert json.loads((out / "finetune" / "finetune.json").read_text())["rows"] == result["rows"]
