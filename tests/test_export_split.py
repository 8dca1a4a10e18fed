"""`istpan export --format onnx --split`: frame graph + head graph (dynamic K), run with onnxruntime as a stream."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from checkpoints import tiny_checkpoint

from istpan.cli.main import main

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in the dev/export extra")


@pytest.mark.slow  # two ONNX exports: ~10 s on an idle 2-core machine, over a minute when it is shared
def test_split_export_runs_a_stream_without_torch_and_matches_the_model(tmp_path, capsys):
    """The order-aware model (the hardest case: frame times inside the head) exported split; onnxruntime alone
    computes features frame by frame and the head over K = 3 and K = 5 of them; both equal the PyTorch model."""
    model, _, ckpt = tiny_checkpoint(tmp_path / "model.pt", time_encoding="fourier", head="glimpse")
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--split", "--out",
                 str(tmp_path / "m.onnx")]) == 0
    match = re.search(r"max_abs_diff frame=(\S+) head=(\S+)", capsys.readouterr().out)
    assert match, "the measured differences are printed"
    worst = max(float(v) for v in match.groups())
    side = json.loads((tmp_path / "m_split.json").read_text())
    assert side["preprocessing"]["num_frames"] == 3 and side["class_names"] == list("abcd")
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
    # above its tolerance the export fails, in one line naming the graph: a tolerance below the difference measured
    tight = worst / 2 if worst > 0 else -1.0
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--split", "--out",
                 str(tmp_path / "tight.onnx"), "--tolerance", repr(tight)]) == 2
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(rf"error: \S*tight\S*\.onnx: exported graph differs from PyTorch by \S+ > tolerance "
                        rf"{tight:g} \(input \([0-9, ]+\)\)", err), err
    assert not (tmp_path / "tight_split.json").exists()  # no sidecar announces graphs that failed their check
    assert main(["export", "--checkpoint", str(ckpt), "--format", "torchscript", "--split"]) == 2
    assert "--split writes two ONNX graphs" in capsys.readouterr().err
