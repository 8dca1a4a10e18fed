"""Checkpoints (atomic write, weights_only load, clear errors); ONNX / TorchScript export checked against PyTorch."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from checkpoints import tiny_checkpoint

from istpan.errors import UserError
from istpan.files.checkpoint import load_checkpoint, save_checkpoint
from istpan.files.export import export_model
from istpan.files.load import load_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An istpan_tiny checkpoint with a non-trivial head (so logits are far from zero), with the order-aware options
    (Fourier frame times, glimpse head): the export tests then cover every op a checkpoint can hold."""
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt", time_encoding="fourier", head="glimpse")[2]


def test_atomic_save_leaves_no_temp_and_replaces(checkpoint, tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(2)}, "meta": {}}, path)
    save_checkpoint({"model": {"w": torch.zeros(2)}, "meta": {}}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.zeros(2))


def test_load_model_rebuilds_the_model(checkpoint):
    model, meta = load_model(checkpoint)
    state = load_checkpoint(checkpoint)["model"]
    assert list(meta.class_names) == list("abcd") and not model.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_bad_checkpoints_are_one_line_user_errors(tmp_path, checkpoint):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(checkpoint.read_bytes()[:1000])
    evil = tmp_path / "evil.pt"
    with evil.open("wb") as f:
        pickle.dump({"model": {}, "meta": {}, "x": np.dtype("float32").__class__}, f, protocol=2)  # arbitrary class
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    noise = tmp_path / "noise.pt"
    noise.write_bytes(bytes(range(256)) * 8)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    cases = [(tmp_path / "missing.pt", "checkpoint not found"), (truncated, "cannot read checkpoint"),
             (evil, "not a plain-tensor checkpoint (it holds a Python object, numpy.dtypes.Float32DType)"),
             (noise, "not a plain-tensor checkpoint"), (empty, "checkpoint is empty"),
             (other, "not an istpan checkpoint")]
    for path, needle in cases:
        with pytest.raises(UserError) as err:
            load_model(path)
        text = str(err.value)
        assert needle in text and str(path) in text and "\n" not in text
        assert "weights_only" not in text and "weights only" not in text.lower()  # never advise loading it unsafely


def test_weights_of_another_shape_are_refused(checkpoint, tmp_path):
    state = load_checkpoint(checkpoint)
    state["meta"] = {**state["meta"], "num_classes": 5, "class_names": list("abcde")}
    save_checkpoint(state, tmp_path / "wrong.pt")
    with pytest.raises(UserError, match="weights do not fit model 'istpan_tiny'"):
        load_model(tmp_path / "wrong.pt")


@pytest.mark.parametrize("fmt", ["torchscript", pytest.param("onnx", marks=pytest.mark.slow)])
def test_export_runs_the_exported_model_and_matches(checkpoint, tmp_path, fmt):
    """The one ONNX export test (it replaced three that each exported istpan_tiny: plain, order-aware at two K, and a
    hand-made dynamic-K export the product does not offer): checkpoint -> export_model -> onnxruntime / jit.load on
    another batch size than the example, against PyTorch. K-generality of the graph is test_models' trace test."""
    model, meta = load_model(checkpoint)
    assert model.model_options["time_encoding"] == "fourier" and model.model_options["head"] == "glimpse"
    out = tmp_path / f"model.{fmt}"
    result = export_model(model, meta, out, format=fmt, tolerance=1e-4)
    assert out.is_file() and result["input_shape"] == [1, 3, 3, 32, 32]
    assert result["max_abs_diff"] <= 1e-4
    video = torch.randn(2, 3, 3, 32, 32)  # another batch size: the exported graph is not tied to the example
    with torch.no_grad():
        expected = model(video).logits
    assert expected.abs().max() > 0.01
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"video": video.numpy()})[0])
    else:
        got = torch.jit.load(str(out))(video)
    assert torch.allclose(got, expected, atol=1e-4)


@pytest.mark.slow
def test_torch_export_program_loads_with_torch_export_load_and_has_dynamic_batch_and_k(checkpoint, tmp_path, caplog):
    """The .pt2 from torch.export, read back with nothing but torch: batch and K other than the example's (K = 1 too),
    against PyTorch to 1e-4 (the fixture's order-aware options: Fourier frame times, glimpse head)."""
    model, meta = load_model(checkpoint)
    out = tmp_path / "model.pt2"
    result = export_model(model, meta, out, format="torch-export", tolerance=1e-4)
    assert result["format"] == "torch-export" and result["max_abs_diff"] <= 1e-4 and result["input_shape"][1] == 3
    assert json.loads((tmp_path / "model.pt2.json").read_text())["class_names"] == list("abcd")
    program = torch.export.load(str(out)).module()
    for batch, k in ((1, 1), (2, 3), (3, 7)):
        video = torch.randn(batch, k, 3, 32, 32)  # (B, K, 3, S, S)
        with torch.no_grad():
            expected = model(video).logits
        assert expected.abs().max() > 0.01
        assert torch.allclose(program(video), expected, atol=1e-4), (batch, k)
    assert not [r for r in caplog.records if "deprecated" in r.getMessage()]


def test_torchscript_export_says_it_is_deprecated_upstream(checkpoint, tmp_path, caplog):
    model, meta = load_model(checkpoint)
    export_model(model, meta, tmp_path / "m.ts", format="torchscript")
    assert any("deprecated" in r.getMessage() and "torch-export" in r.getMessage() for r in caplog.records)


def test_export_fails_above_tolerance(checkpoint, tmp_path):
    model, meta = load_model(checkpoint)
    with pytest.raises(UserError, match="differs from PyTorch by"):
        export_model(model, meta, tmp_path / "m.ts", format="torchscript", tolerance=-1.0)
