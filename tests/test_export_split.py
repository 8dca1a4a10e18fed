"""`istpan export --format onnx --split`: frame graph + head graph (dynamic K), run with onnxruntime as a stream."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from istpan.cli.main import main
from istpan.config import DataConfig
from istpan.engine.checkpoint import build_meta, save_checkpoint

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in the dev/export extra")


@pytest.mark.slow  # two ONNX exports: ~10 s on an idle 2-core machine, over a minute when it is shared
def test_split_export_runs_a_stream_without_torch_and_matches_the_model(tmp_path, capsys):
    """The order-aware model (the hardest case: frame times inside the head) exported split; onnxruntime alone
    computes features frame by frame and the head over K = 3 and K = 5 of them; both equal the PyTorch model."""
    from istpan.models import create_model

    torch.manual_seed(0)
    model = create_model("istpan_tiny", num_classes=4, input_size=32, time_encoding="fourier", head="glimpse")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # logits far from zero, time preference non-zero
    meta = build_meta(model, class_names=list("abcd"),
                      data_cfg=DataConfig(input_size=32, short_side=36, test_segments=3))
    ckpt = save_checkpoint({"model": model.state_dict(), "meta": meta, "epoch": 1}, tmp_path / "model.pt")
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--split", "--out",
                 str(tmp_path / "m.onnx")]) == 0
    assert "max_abs_diff frame=" in capsys.readouterr().out
    side = json.loads((tmp_path / "m_split.json").read_text())
    assert side["preprocessing"]["num_segments"] == 3 and side["class_names"] == list("abcd")
    frame = ort.InferenceSession(str(tmp_path / side["frame_graph"]), providers=["CPUExecutionProvider"])
    head = ort.InferenceSession(str(tmp_path / side["head_graph"]), providers=["CPUExecutionProvider"])
    video = torch.randn(5, 3, 32, 32)  # 5 normalised frames
    feats = np.stack([frame.run(None, {"frames": f[None].numpy()})[0][0] for f in video])  # one frame at a time
    assert list(feats.shape[1:]) == side["feature_shape"]
    model.eval()
    with torch.no_grad():
        for k in (3, 5):
            (logits,) = head.run(None, {"features": feats[None, -k:]})
            ref = model(video[None, -k:]).logits
            np.testing.assert_allclose(logits, ref.numpy(), atol=1e-4, rtol=0)
    assert main(["export", "--checkpoint", str(ckpt), "--format", "torchscript", "--split"]) == 2
    assert "--split writes two ONNX graphs" in capsys.readouterr().err
