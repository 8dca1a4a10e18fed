"""`istpan ablate` in a tiny configuration writes both files; the redundancy measure matches its definition."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from istpan.cli.main import main
from istpan.experiments.ablation import ABLATION, format_markdown, rows
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
