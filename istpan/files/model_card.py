"""The model card (README.md with the Hub's YAML front matter) of an HF folder, and pushing the folder to the Hub.

The card is written from the folder's own `config.json` (what `save_pretrained` wrote: model name and options, class
names, multi-label flag, preprocessing) plus, when the checkpoint knows them, the run's validation metrics at its
best epoch. The front matter is built with huggingface_hub's `ModelCardData`, so it is the metadata the Hub parses:
`library_name: istpan`, `pipeline_tag: video-classification`, license, tags, `model-index` (the metrics), and
istpan's own `classes` and `preprocessing` keys. The body says how to load the model and what it expects.

Pushing goes through huggingface_hub's API (`HfApi.create_repo` + `upload_folder`), the same calls `hf upload` makes;
the token is huggingface_hub's (`hf auth login` or HF_TOKEN).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from istpan.data.preprocess import Preprocessing
from istpan.errors import UserError

__all__ = ["CARD_NAME", "model_card", "push_to_hub", "run_metrics", "write_model_card"]

CARD_NAME = "README.md"
PIPELINE_TAG = "video-classification"
# Validation metric key (training history, `val_<key>`) -> (model-index metric type, readable name).
_METRICS = {
    "top1": ("accuracy", "top-1 accuracy (%)"),
    "top5": ("top_5_accuracy", "top-5 accuracy (%)"),
    "mean_class_acc": ("mean_class_accuracy", "mean class accuracy (%)"),
    "mAP": ("map", "mAP (%)"),
    "wAP": ("weighted_map", "weighted mAP (%)"),
}


def run_metrics(checkpoint: dict[str, Any]) -> dict[str, float]:
    """The validation metrics of a training checkpoint at its best epoch (else its last validated epoch); {} when the
    run never validated (or the state is not a training checkpoint, e.g. an HF folder's)."""
    history = [h for h in checkpoint.get("history") or [] if any(k.startswith("val_") for k in h)]
    if not history:
        return {}
    best = [h for h in history if h.get("epoch") == checkpoint.get("best_epoch")]
    entry = (best or history)[-1]
    return {key: float(entry[f"val_{key}"]) for key in _METRICS if isinstance(entry.get(f"val_{key}"), (int, float))}


def _dataset(train_config: dict[str, Any] | None) -> tuple[str, str]:
    """(type, name) of the validation data for model-index: the data root's folder name, which is all a run knows."""
    data = (train_config or {}).get("data") or {}
    root = Path(str(data.get("root") or "")).name or "validation-set"
    split = data.get("split")
    return root, f"{root} (validation{f', split {split}' if split else ''})"


def model_card(config: dict[str, Any], *, metrics: dict[str, float] | None = None, license: str = "mit",
               repo_id: str | None = None) -> Any:
    """A `huggingface_hub.ModelCard` for the HF folder whose `config.json` is `config`."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    name, classes = str(config["model_name"]), [str(c) for c in config["class_names"]]
    pre = dict(config.get("preprocessing") or {})
    family = "tsn" if name.startswith("tsn_") else "istpan"
    backbone = name.removeprefix("istpan_single_").removeprefix("istpan_").removeprefix("tsn_")
    dataset_type, dataset_name = _dataset(config.get("train_config"))
    results = [EvalResult(task_type=PIPELINE_TAG, task_name="Video Classification", dataset_type=dataset_type,
                          dataset_name=dataset_name, dataset_split="validation", metric_type=_METRICS[key][0],
                          metric_name=_METRICS[key][1], metric_value=round(float(value), 4))
               for key, value in (metrics or {}).items() if key in _METRICS]
    data = ModelCardData(
        library_name="istpan", pipeline_tag=PIPELINE_TAG, license=license,
        tags=["istpan", "video-classification", "action-recognition", name, "pytorch", "safetensors"],
        model_name=repo_id or name, eval_results=results or None,
        classes=classes, multi_label=bool(config.get("multi_label", False)), preprocessing=pre,
    )
    load_id = repo_id or "<this folder or repo id>"
    read = Preprocessing.from_dict(pre)  # the one reader of the dict (completes those written before K had one name)
    k, size = read.num_frames, read.input_size
    metric_lines = "\n".join(f"| {_METRICS[key][1]} | {value:.2f} |" for key, value in (metrics or {}).items()
                             if key in _METRICS)
    body = "\n".join([
        f"# {repo_id or name}",
        "",
        f"A video classifier written by istpan's `istpan export --format hf`: `{name}`, "
        + ("IST-PAN pyramid attention (Du et al., ECCV 2018, [arXiv 1808.01106](https://arxiv.org/abs/1808.01106))"
           if family == "istpan" else "TSN average consensus")
        + f" on the {backbone} backbone; {len(classes)} classes, "
        f"{'multi-label' if config.get('multi_label') else 'one label per video'}.",
        "",
        "## Use",
        "",
        "```bash",
        f"istpan predict video.mp4 --checkpoint {load_id}",
        "```",
        "",
        "```python",
        "import istpan",
        f'model = istpan.from_pretrained("{load_id}")   # config.json + model.safetensors; no code is run',
        "```",
        "",
        f"Input: K = {k} frames of {size}x{size} pixels per clip, normalised with mean {pre.get('mean')} and std "
        f"{pre.get('std')} (the `preprocessing` entry of the metadata above says how frames are sampled, resized and"
        " cropped).",
        "",
        *(["## Evaluation (validation set, best epoch of the training run)", "", "| metric | value |", "| --- | --- |",
           metric_lines, ""] if metric_lines else []),
        "## Classes",
        "",
        ", ".join(f"`{c}`" for c in classes),
        "",
    ])
    return ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n\n" + body)


def write_model_card(folder: str | Path, *, metrics: dict[str, float] | None = None, license: str = "mit",
                     repo_id: str | None = None) -> Path:
    """Write `<folder>/README.md` from `<folder>/config.json`; returns its path."""
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{folder / 'config.json'}: cannot read the model's config ({err})") from err
    path = folder / CARD_NAME
    model_card(config, metrics=metrics, license=license, repo_id=repo_id).save(path)
    return path


def push_to_hub(folder: str | Path, repo_id: str, *, private: bool = False, api: Any = None,
                commit_message: str = "istpan export --format hf") -> str:
    """Create `repo_id` on the Hub if it is missing (private if asked) and upload the folder's files to its root;
    returns the commit's URL. `api`: an `huggingface_hub.HfApi` (default: a new one, with the saved token)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = api if api is not None else HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                   commit_message=commit_message)
    except (HfHubHTTPError, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"--push-to-hub {repo_id}: {first} (log in with `hf auth login` or set HF_TOKEN)") from err
    return str(getattr(commit, "commit_url", commit))
