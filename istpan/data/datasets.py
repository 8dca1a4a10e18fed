"""Annotation parsers: the dataset formats users already have on disk -> `VideoRecord`s and class names.

Each parser reads the official files as they are, quirks included (UCF101 test lists without labels and with a class
folder whose case differs from classInd.txt, HMDB51 class names that only exist in split file names and video names
with spaces and `!+(&`, Charades rows without any action). A line that can't be used (unknown label, malformed) is
not fatal: it is skipped and described in `Annotations.problems`, which `istpan data check` reports and
`build_dataset` warns about, so one typo never blocks a run and never goes unnoticed.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from istpan.errors import UserError

__all__ = [
    "FORMATS",
    "VIDEO_SUFFIXES",
    "Annotations",
    "VideoRecord",
    "parse_annotations",
    "read_class_names",
]

log = logging.getLogger(__name__)

FORMATS = ("ucf101", "hmdb51", "charades", "kinetics", "folder", "list", "synthetic")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")


@dataclass
class VideoRecord:
    """One video: where it is, its class index (or indices, multi-label) and format-specific extras (`meta`)."""

    path: str
    label: int | list[int]
    meta: dict = field(default_factory=dict)


@dataclass
class Annotations:
    records: list[VideoRecord]
    class_names: list[str]
    problems: list[str] = field(default_factory=list)  # "<file>:<line>: <what is wrong>", lines that were skipped


def _read_lines(path: Path) -> list[str]:
    """Lines of a text annotation file; the official UCF101/HMDB51 files have CRLF endings and trailing spaces."""
    if not path.is_file():
        raise UserError(f"{path}: annotation file not found")
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


def read_class_names(path: Path) -> list[str]:
    """One class per line, in label order. `1 ApplyEyeMakeup` (UCF101 classInd.txt, 1-based) and `c000 Holding some
    clothes` (Charades) are understood: the leading id is dropped and, if numeric, orders the classes."""
    rows = [line.strip() for line in _read_lines(path) if line.strip()]
    numbered = [re.match(r"^(\d+)\s+(.+)$", r) for r in rows]
    if rows and all(numbered):
        return [m.group(2).strip() for m in sorted(numbered, key=lambda m: int(m.group(1)))]
    charades = [re.match(r"^c\d{3}\s+(.+)$", r) for r in rows]
    if rows and all(charades):
        return [m.group(1).strip() for m in charades]
    return rows


def _case_insensitive(names: list[str]) -> dict[str, int]:
    return {n.lower(): i for i, n in enumerate(names)}


# ------------------------------------------------------------------------------------------------------ UCF101
def _ucf101(ann: Path, root: Path, *, subset: str, split: int, classes: Path | None) -> Annotations:
    folder = ann if ann.is_dir() else ann.parent
    if ann.is_dir():
        ann = folder / (f"trainlist0{split}.txt" if subset == "train" else f"testlist0{split}.txt")
    names = read_class_names(classes or folder / "classInd.txt")
    lookup = _case_insensitive(names)  # classInd says HandstandPushups, the files say HandStandPushups
    records, problems = [], []
    for n, line in enumerate(_read_lines(ann), 1):
        parts = line.split()
        if not parts:
            continue
        rel = parts[0]
        if len(parts) > 1:  # trainlist: "<Class>/<video>.avi <1-based id>"
            if not parts[1].isdigit() or not 1 <= int(parts[1]) <= len(names):
                problems.append(f"{ann}:{n}: class id '{parts[1]}' is not in 1..{len(names)}")
                continue
            label = int(parts[1]) - 1
        else:  # testlist: no label; the class is the folder
            label = lookup.get(rel.split("/")[0].lower(), -1)
            if label < 0:
                problems.append(f"{ann}:{n}: class folder '{rel.split('/')[0]}' is not in classInd.txt")
                continue
        records.append(VideoRecord(str(root / rel), label))
    return Annotations(records, names, problems)


# ------------------------------------------------------------------------------------------------------ HMDB51
_HMDB_SPLIT = re.compile(r"^(?P<cls>.+)_test_split(?P<split>\d)\.txt$")


def _hmdb51(ann: Path, root: Path, *, subset: str, split: int, classes: Path | None) -> Annotations:
    """`<class>_test_split<N>.txt` lines are `<video>.avi <id>`: 1 train, 2 test, 0 unused."""
    if not ann.is_dir():
        raise UserError(f"{ann}: HMDB51 annotations must be the folder of <class>_test_split<N>.txt files")
    files = {}
    for f in sorted(ann.iterdir()):
        m = _HMDB_SPLIT.match(f.name)
        if m and int(m.group("split")) == split:
            files[m.group("cls")] = f
    if not files:
        raise UserError(f"{ann}: no <class>_test_split{split}.txt files (want testTrainMulti_7030_splits)")
    names = read_class_names(classes) if classes else sorted(files)
    lookup = {n: i for i, n in enumerate(names)}
    wanted = "1" if subset == "train" else "2"
    records, problems = [], []
    for cls, f in files.items():
        if cls not in lookup:
            problems.append(f"{f}: class '{cls}' is not in {classes}")
            continue
        for n, line in enumerate(_read_lines(f), 1):
            parts = line.strip().rsplit(maxsplit=1)  # video names may contain spaces: the id is the last token
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                problems.append(f"{f}:{n}: expected '<video>.avi <0|1|2>', got '{line.strip()}'")
            elif parts[1] == wanted:
                records.append(VideoRecord(str(root / cls / parts[0]), lookup[cls]))
    return Annotations(records, names, problems)


# ---------------------------------------------------------------------------------------------------- Charades
def _charades(ann: Path, root: Path, *, subset: str, split: int, classes: Path | None) -> Annotations:
    """Multi-label: label = sorted class indices of `actions` ("c092 11.90 21.20;c147 0.00 12.60", may be empty);
    meta keeps the per-class time spans (seconds) and the video length for untrimmed evaluation."""
    if classes is None:
        raise UserError("data.classes: Charades needs Charades_v1_classes.txt (157 classes) to fix the label order")
    codes = [line.split()[0] for line in _read_lines(classes) if line.strip()]
    names = read_class_names(classes)
    lookup = {c: i for i, c in enumerate(codes)}
    if not ann.is_file():
        raise UserError(f"{ann}: annotation file not found")
    records, problems, reversed_spans = [], [], []
    with ann.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "id" not in reader.fieldnames or "actions" not in reader.fieldnames:
            raise UserError(f"{ann}: not a Charades CSV (needs columns 'id' and 'actions')")
        for n, row in enumerate(reader, 2):
            spans = []
            for item in filter(None, (a.strip() for a in (row["actions"] or "").split(";"))):
                parts = item.split()
                if len(parts) != 3 or parts[0] not in lookup:
                    problems.append(f"{ann}:{n}: bad action '{item}' (expected '<c###> <start> <end>')")
                    continue
                spans.append((lookup[parts[0]], float(parts[1]), float(parts[2])))
                if spans[-1][1] > spans[-1][2]:
                    reversed_spans.append(f"{ann}:{n}: '{item}'")
            meta = {"id": row["id"], "spans": spans}
            if row.get("length"):
                meta["length_s"] = float(row["length"])
            records.append(VideoRecord(str(root / f"{row['id']}.mp4"), sorted({s[0] for s in spans}), meta))
    if reversed_spans:  # kept as written (the class still labels the video), but never silently
        log.warning("%s: %d actions end before they start (kept as listed; first: %s)", ann, len(reversed_spans),
                    reversed_spans[0])
    return Annotations(records, names, problems)


# ---------------------------------------------------------------------------------------------------- Kinetics
def _kinetics(ann: Path, root: Path, *, subset: str, split: int, classes: Path | None, names: list[str] | None):
    """`label,youtube_id,time_start,time_end,split`; videos at `<root>/<label>/<id>_<start:06d>_<end:06d>.mp4` (the
    downloader's layout; `<label>` with spaces or underscores) or flat in `<root>`. Downloads are often .mkv or .webm
    too: each folder is listed once and the file with the expected stem is used whatever its suffix."""
    if not ann.is_file():
        raise UserError(f"{ann}: annotation file not found")
    with ann.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if rows and not {"youtube_id", "time_start", "time_end"} <= rows[0].keys():
        raise UserError(f"{ann}: not a Kinetics CSV (needs columns label,youtube_id,time_start,time_end)")
    if rows and "label" not in rows[0]:
        raise UserError(f"{ann}: no 'label' column ({len(rows)} rows; the official test list has no labels), so it "
                        "can't be used to train or evaluate; use the validate CSV")
    if names is None:
        names = read_class_names(classes) if classes else sorted({r["label"] for r in rows if r.get("label")})
    lookup = {n: i for i, n in enumerate(names)}
    folders = {p.name for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()
    by_stem: dict[Path, dict[str, str]] = {}  # folder -> {stem: file name}, filled on first use

    def locate(folder: Path, stem: str) -> Path:
        if folder not in by_stem:
            files = os.listdir(folder) if folder.is_dir() else []
            by_stem[folder] = {}
            for f in sorted(files, key=lambda f: (not f.endswith(".mp4"), f)):  # .mp4 wins when both exist
                if f.lower().endswith(VIDEO_SUFFIXES):
                    by_stem[folder].setdefault(f.rsplit(".", 1)[0], f)
        return folder / by_stem[folder].get(stem, f"{stem}.mp4")

    records, problems = [], []
    for n, r in enumerate(rows, 2):
        label = r.get("label") or ""
        if label not in lookup:
            problems.append(f"{ann}:{n}: unknown label '{label}'")
            continue
        stem = f"{r['youtube_id']}_{int(float(r['time_start'])):06d}_{int(float(r['time_end'])):06d}"
        folder = next((f for f in (label, label.replace(" ", "_")) if f in folders), None)
        path = locate(root / folder if folder else root, stem)
        meta = {"youtube_id": r["youtube_id"], "time_start": float(r["time_start"]), "time_end": float(r["time_end"])}
        records.append(VideoRecord(str(path), lookup[label], meta))
    return Annotations(records, names, problems)


# --------------------------------------------------------------------------------------------- folder and list
def _folder(ann: Path, root: Path, *, subset: str, split: int, classes: Path | None, names: list[str] | None):
    """`<ann>/<class>/**/<video>` for every video suffix; the class is the first folder level.

    Every path with a video suffix is a record, also one that is not a file (a folder named `x.mp4`, a dangling
    link): the decoder says what is wrong with it, so `data check` reports it and training skips it with the usual
    line instead of the video silently not existing."""
    if not ann.is_dir():
        raise UserError(f"{ann}: not a folder (format 'folder' expects <folder>/<class>/<video>.mp4)")
    found = sorted(p.name for p in ann.iterdir() if p.is_dir())
    if names is None:
        names = read_class_names(classes) if classes else found
    lookup = {n: i for i, n in enumerate(names)}
    records, problems = [], []
    for cls in found:
        videos = sorted(p for p in (ann / cls).rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
        if cls not in lookup:
            problems.append(f"{ann / cls}: class folder '{cls}' is not a known class ({len(videos)} videos skipped)")
            continue
        records.extend(VideoRecord(str(v), lookup[cls]) for v in videos)
    return Annotations(records, names, problems)


def _list_labels(path: Path) -> list[str]:
    """Label tokens of a list file, for deriving class names when there is no classes file."""
    tokens = []
    for line in _read_lines(path):
        parts = _split_list_line(line)
        if parts:
            tokens.extend(t.strip() for t in parts[1].split(","))
    return tokens


def _split_list_line(line: str) -> tuple[str, str] | None:
    """`path<TAB>labels` when a tab is present (class names with spaces), else `path labels` split at the last space
    (paths with spaces)."""
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    parts = line.rsplit("\t", 1) if "\t" in line else line.rsplit(maxsplit=1)
    return (parts[0].strip(), parts[1].strip()) if len(parts) == 2 else (line, "")


def _list(ann: Path, root: Path, *, subset: str, split: int, classes: Path | None, names: list[str] | None):
    """`path label[,label...]`; labels are class names or 0-based integer ids; paths relative to `root`."""
    if names is None:
        names = read_class_names(classes) if classes else _names_from_tokens(_list_labels(ann))
    lookup = {n: i for i, n in enumerate(names)}
    records, problems = [], []
    for n, line in enumerate(_read_lines(ann), 1):
        parts = _split_list_line(line)
        if parts is None:
            continue
        rel, raw = parts
        labels = []
        for token in filter(None, (t.strip() for t in raw.split(","))):
            if token in lookup:
                labels.append(lookup[token])
            elif token.isdigit() and int(token) < len(names):
                labels.append(int(token))
            else:
                problems.append(f"{ann}:{n}: unknown label '{token}' (not a class name nor an id < {len(names)})")
                labels = None
                break
        if labels is None:
            continue
        if not labels:
            problems.append(f"{ann}:{n}: no label after the path '{rel}'")
            continue
        multi = "," in raw
        records.append(VideoRecord(str(root / rel), sorted(set(labels)) if multi else labels[0]))
    return Annotations(records, names, problems)


def _names_from_tokens(tokens: list[str]) -> list[str]:
    if tokens and all(t.isdigit() for t in tokens):
        return [str(i) for i in range(max(int(t) for t in tokens) + 1)]
    return sorted({t for t in tokens if not t.isdigit()})


# ---------------------------------------------------------------------------------------------------- dispatch
def parse_annotations(
    fmt: str,
    annotations: str | Path,
    *,
    root: str | Path = "",
    subset: str = "train",
    split: int = 1,
    classes: str | Path | None = None,
    class_source: str | Path | None = None,
) -> Annotations:
    """Parse one split of a dataset. `subset` is "train" or "val"; `split` picks the UCF101/HMDB51 official split.

    `class_source` (kinetics, folder, list without a classes file): the training annotations the class names are
    derived from, so that train and val agree on label indices even when val lacks a class.
    """
    if fmt not in FORMATS:
        raise UserError(f"data.format: unknown format '{fmt}' (choose from {', '.join(FORMATS)})")
    ann = Path(annotations)
    root = Path(root) if root else (ann.parent if ann.is_file() else ann)  # no root: paths relative to the list
    if not ann.exists():
        raise UserError(f"{ann}: annotations not found")
    classes = Path(classes) if classes else None
    if classes is not None and not classes.is_file():
        raise UserError(f"{classes}: class-name file not found")
    common = dict(subset=subset, split=split, classes=classes)
    if fmt == "ucf101":
        return _ucf101(ann, root, **common)
    if fmt == "hmdb51":
        return _hmdb51(ann, root, **common)
    if fmt == "charades":
        return _charades(ann, root, **common)
    names = None
    if classes is None and class_source is not None and Path(class_source) != ann:
        names = parse_annotations(fmt, class_source, root=root, subset="train", split=split).class_names
    parse = {"kinetics": _kinetics, "folder": _folder, "list": _list, "synthetic": _list}[fmt]
    return parse(ann, root, names=names, **common)
