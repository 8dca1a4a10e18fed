"""`istpan ablate` in a tiny configuration writes both files; the redundancy measure matches its definition."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from istpan.cli.main import main
from istpan.experiments.ablation import format_markdown, rows
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
    assert markdown == format_markdown(result) and markdown in capsys.readouterr().out

    by_name = {r["name"]: r for r in result["rows"]}
    assert set(by_name) == {"TSN average consensus", FULL}
    for name, row in by_name.items():
        assert row["seeds_done"] == 2 and f"| {name} |" in markdown
        values = [m["top1"] for m in row["per_seed"]]
        assert row["top1"]["mean"] == pytest.approx(sum(values) / 2)
        assert row["top1"]["std"] == pytest.approx(float(torch.tensor(values).std()))
    assert "redundancy" not in by_name["TSN average consensus"]  # no attention, nothing to measure
    assert 0.0 <= by_name[FULL]["redundancy"]["mean"] <= 1.0
    assert {f"top1_test_k{k}" for k in (3, 8, 16, 25)} <= set(by_name[FULL])
    assert "| test K | 3 | 8 | 16 | 25 |" in markdown
    assert (out / "data_untrimmed_seed1" / "ground_truth.json").is_file()


def test_unknown_row_is_a_user_error(tmp_path: Path, capsys) -> None:
    assert main(["ablate", "--quick", "--seeds", "1", "--out", str(tmp_path), "--only", "nonsense"]) == 2
    assert "no ablation row" in capsys.readouterr().err


def test_rows_cover_the_issue_table() -> None:
    names = [r.name for r in rows()]
    for needle in (
        "TSN",
        "single-scale",
        "N=2",
        "N=3",
        "l_interactive",
        "l_attn",
        "R=max",
        "R=bilinear",
        "R=strided",
        "F=sum",
        "F=max",
        "F=learned",
        "untrimmed",
    ):
        assert any(needle in n for n in names), needle


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
