"""Summary, verdicts and Markdown of the pretrained ablation (istpan/experiments/pretrained_ablation.py).

Every number a reader acts on comes with its 95 % interval: the row's mean over seeds, and its paired difference to
TSN and to N = 3 on the same seeds (t over seeds) plus, beside it, the interval from resampling the validation videos
(bootstrap). The verdict table maps each claim of the paper to one comparison and one interval.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from istpan.data.tools import synth
from istpan.experiments.stats import NEGLIGIBLE, bootstrap_paired, mean_ci, paired_ci, verdict

__all__ = ["claims", "format_markdown", "summarise"]

_TSN, _N3, _N1 = "TSN average consensus", "pyramid attention N=3", "single scale (N=1)"


def _by_seed(runs: list[dict[str, Any]], key: str) -> dict[int, float]:
    return {m["seed"]: m[key] for m in runs if m.get(key) is not None}


def _paired(a: list[dict], b: list[dict], key: str = "top1", key_b: str | None = None) -> dict[str, float]:
    """Paired t interval of a[key] − b[key_b] over the seeds both rows have."""
    x, y = _by_seed(a, key), _by_seed(b, key_b or key)
    common = sorted(set(x) & set(y))
    return paired_ci([x[s] for s in common], [y[s] for s in common])


def _correct(runs: list[dict], seeds: list[int]) -> torch.Tensor:
    by = {m["seed"]: m["correct"] for m in runs}
    return torch.tensor([[c == "1" for c in by[s]] for s in seeds])  # (S, V) bool


def _boot(a: list[dict], b: list[dict]) -> dict[str, float] | None:
    seeds = sorted({m["seed"] for m in a} & {m["seed"] for m in b})
    return bootstrap_paired(_correct(a, seeds), _correct(b, seeds)) if seeds else None


def summarise(table: list, runs: dict[str, list[dict]], *, setup: dict, seeds: int, timing: dict,
              num_val: int, num_train: int, num_anyk: int = 0) -> dict[str, Any]:
    """The JSON written after every row × seed: per row the intervals, paired differences and mean curve."""
    rows = []
    for row in table:
        got = sorted(runs[row.name], key=lambda m: m["seed"])
        if not got:
            continue
        entry: dict[str, Any] = {
            "name": row.name, "family": row.family, "options": row.options, "beta": row.beta, "gamma": row.gamma,
            "seeds_done": len(got),
            **{k: mean_ci([m[k] for m in got if k in m])
               for k in ("top1", "top1_pairs_merged", "redundancy", "pointing_game", "pointing_chance", "train_s")
               if any(k in m for m in got)},
        }
        for ref, key in ((_TSN, "vs_tsn"), (_N3, "vs_n3")):
            if runs.get(ref) and row.name != ref:
                entry[key] = _paired(got, runs[ref])
                entry[f"{key}_bootstrap"] = _boot(got, runs[ref])
        curves = [m["curve"] for m in got]
        entry["curve"] = [sum(c[e] for c in curves) / len(curves) for e in range(min(map(len, curves)))]
        ks = sorted(int(k[len("top1_k"):]) for k in got[0] if k.startswith("top1_k"))
        if ks:
            entry["any_k"] = {k: mean_ci([m[f"top1_k{k}"] for m in got]) for k in ks}
            entry["any_k_vs_k8"] = {k: _paired(got, got, f"top1_k{k}", "top1_k8") for k in ks}
        entry["per_seed"] = got
        rows.append(entry)
    result = {
        "regime": "pretrained (frozen ImageNet MobileNetV2, cached features)",
        "setup": setup, "seeds": seeds, "num_train": num_train, "num_val": num_val, "num_anyk": num_anyk,
        "classes": synth.CLASSES, "chance": 100.0 / len(synth.CLASSES), "timing": timing, "rows": rows,
    }
    result["claims"] = claims(result, runs)
    return result


def claims(result: dict[str, Any], runs: dict[str, list[dict]]) -> list[dict[str, Any]]:
    """One line per claim of the paper: the comparison, its interval and the verdict."""
    by = {r["name"]: r for r in result["rows"]}
    out = []

    def add(claim: str, comparison: str, ci: dict[str, float] | None, rule=verdict) -> None:
        if ci is not None and ci.get("n"):
            out.append(dict(claim=claim, comparison=comparison, ci=ci, verdict=rule(ci)))

    n3 = runs.get(_N3, [])
    if n3 and runs.get(_TSN):
        add("attention beats average pooling", "N=3 − TSN, top-1", _paired(n3, runs[_TSN]))
    if n3 and runs.get(_N1):
        add("pyramid beats one scale", "N=3 − N=1, top-1", _paired(n3, runs[_N1]))
    for prefix, claim in (("N=3 + l_interactive (", "l_interactive helps"), ("N=3 + l_attn (", "l_attn helps")):
        name = next((n for n in by if n.startswith(prefix)), None)
        if name:
            add(claim, f"{name} − N=3, top-1", by[name].get("vs_n3"))
    for prefix, claim in (("N=3 + both losses (", "l_interactive + l_attn together help"),
                          ("N=3 + time order (", "time order helps (ours, not the paper's)")):
        name = next((n for n in by if n.startswith(prefix)), None)
        if name:
            add(claim, f"{name} − N=3, top-1", by[name].get("vs_n3"))
    if n3 and "top1_k25" in n3[0]:
        def no_loss(ci: dict[str, float]) -> str:  # "any K" holds when more frames do not cost accuracy
            if math.isnan(ci["lo"]):
                return "too small to tell at this power"
            return "holds" if ci["lo"] > -NEGLIGIBLE else ("does not hold" if ci["hi"] < 0 else
                                                          "too small to tell at this power")
        add("any K at test (trained K=8)", "N=3 tested K=25 − K=8, top-1", _paired(n3, n3, "top1_k25", "top1_k8"),
            no_loss)
    if n3 and "pointing_game" in n3[0]:
        add("attention localises the actor", "N=3 pointing game − random cell", _paired(n3, n3, "pointing_game",
                                                                                        "pointing_chance"))
    return out


def _ci(stat: dict | None, digits: int = 1) -> str:
    if not stat or not stat.get("n"):
        return "–"
    if math.isnan(stat.get("lo", float("nan"))):
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} [{stat['lo']:.{digits}f}, {stat['hi']:.{digits}f}]"


def _signed(stat: dict | None) -> str:
    if not stat or not stat.get("n"):
        return "–"
    if math.isnan(stat.get("lo", float("nan"))):
        return f"{stat['mean']:+.1f}"
    return f"{stat['mean']:+.1f} [{stat['lo']:+.1f}, {stat['hi']:+.1f}]"


def format_markdown(result: dict[str, Any], *, header: list[str] | None = None) -> str:
    """Main table, verdicts, the any-K curve and the validation curves, as Markdown. header: lines that replace the
    ones describing the setup (the fine-tuned rows have another recipe: istpan/experiments/finetune.py)."""
    b = result["setup"].get("budget", result["setup"])
    lines = [
        *(header or _setup_lines(result)),
        "",
        "| row | top-1 % | Δ vs TSN | Δ vs N=3 | pairs merged % | pointing game % | redundancy | train s | seeds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['name']} | {_ci(r.get('top1'))} | {_signed(r.get('vs_tsn'))} | {_signed(r.get('vs_n3'))} | "
            f"{_ci(r.get('top1_pairs_merged'))} | {_ci(r.get('pointing_game'))} | {_ci(r.get('redundancy'), 3)} | "
            f"{r.get('train_s', {}).get('mean', float('nan')):.0f} | {r['seeds_done']} |"
        )
    chance = next((r["pointing_chance"]["mean"] for r in result["rows"] if "pointing_chance" in r), None)
    if chance is not None:
        lines += ["", f"Pointing game chance (a random cell of the 4×4 grid in the actor's box): {chance:.1f} %."]
    boot = [r for r in result["rows"] if r.get("vs_tsn_bootstrap") or r.get("vs_n3_bootstrap")]
    if boot:
        lines += ["", "Δ with the validation videos resampled (bootstrap, 95 %): the part of the uncertainty the "
                  "seeds do not see.", "", "| row | Δ vs TSN | Δ vs N=3 |", "| --- | --- | --- |"]
        for r in boot:
            lines.append(f"| {r['name']} | {_boot_txt(r.get('vs_tsn_bootstrap'))} | "
                         f"{_boot_txt(r.get('vs_n3_bootstrap'))} |")
    if result.get("claims"):
        lines += ["", "| claim of the paper | comparison | Δ [95 % CI] | verdict |", "| --- | --- | --- | --- |"]
        for c in result["claims"]:
            lines.append(f"| {c['claim']} | {c['comparison']} | {_signed(c['ci'])} | {c['verdict']} |")
    k_rows = [r for r in result["rows"] if r.get("any_k")]
    if k_rows:
        lines += ["", f"Any number of frames (trained K = {b['segments']}, tested K = 1…25 on {result['num_anyk']} "
                  "validation videos cached at every frame), top-1 %:", "",
                  "| test K | " + " | ".join(r["name"] for r in k_rows) + " |",
                  "| --- |" + " --- |" * len(k_rows)]
        for k in sorted(k_rows[0]["any_k"], key=int):
            lines.append(f"| {k} | " + " | ".join(_ci(r["any_k"].get(k)) for r in k_rows) + " |")
    lines += ["", "Validation top-1 after each epoch (mean over seeds):", "",
              "| row | " + " | ".join(f"ep {e + 1}" for e in _epochs(result)) + " |",
              "| --- |" + " --- |" * len(_epochs(result))]
    for r in result["rows"]:
        lines.append(f"| {r['name']} | " + " | ".join(f"{r['curve'][e]:.1f}" if e < len(r["curve"]) else "–"
                                                      for e in _epochs(result)) + " |")
    return "\n".join(lines) + "\n"


def _epochs(result: dict[str, Any]) -> list[int]:
    n = result["setup"].get("budget", result["setup"])["epochs"]
    return list(range(n)) if n <= 12 else sorted({e for e in (0, 1, 3, 5, 7, 11, 15, 19, 23, 31, n - 1) if e < n})


def _boot_txt(stat: dict | None) -> str:
    return "–" if not stat else f"{stat['mean']:+.1f} [{stat['lo']:+.1f}, {stat['hi']:+.1f}]"


def _setup_lines(result: dict[str, Any]) -> list[str]:
    s, b = result["setup"], result["setup"]["budget"]
    t = result.get("timing", {})
    return [
        f"Regime: {result['regime']}. Cluttered synthetic set: {result['num_train']} train / {result['num_val']} "
        f"validation videos of {s['size']}² px, {s['num_frames']} frames (data seed {s['data_seed']}); per row "
        f"{b['epochs']} epochs, batch {b['batch_size']}, K = {b['segments']}, AdamW lr {b['lr']} wd "
        f"{b['weight_decay']}, cosine; {result['seeds']} seeds. Mean [95 % CI over seeds]; Δ = paired difference on "
        f"the same seeds and data. Chance {result['chance']:.1f} %.",
        f"Time (wall): data {t.get('generate_s', 0):.0f} s, features "
        f"{sum(v for k, v in t.items() if k.startswith('features_')):.0f} s, rows {t.get('rows_s', 0) / 60:.1f} min"
        + (f" ({t['note']})." if t.get("note") else "."),
    ]
