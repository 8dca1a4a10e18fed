"""Parsers against small files written in the official formats, quirks included; build_dataset's errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from istpan.config import DataConfig
from istpan.data import build_dataset, parse_annotations
from istpan.errors import UserError


def write(path: Path, text: str, newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.replace("\n", newline).encode())
    return path


# ---------------------------------------------------------------------------------------------------------- UCF101
@pytest.fixture
def ucf(tmp_path):
    splits = tmp_path / "ucfTrainTestlist"
    write(splits / "classInd.txt", "1 ApplyEyeMakeup\n2 HandstandPushups\n3 YoYo\n", "\r\n")  # CRLF, as shipped
    write(splits / "trainlist01.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n"
                                      "HandstandPushups/v_HandStandPushups_g08_c01.avi 2\n"
                                      "YoYo/v_YoYo_g08_c01.avi 4\n", "\r\n")
    write(splits / "testlist01.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n"
                                     "HandStandPushups/v_HandStandPushups_g01_c01.avi\n"  # folder case differs
                                     "YoYo/v_YoYo_g01_c01.avi\n", "\r\n")
    write(splits / "trainlist02.txt", "YoYo/v_YoYo_g01_c01.avi 3\n")
    return tmp_path


def test_ucf101_train_and_test_lists(ucf):
    root = ucf / "UCF-101"
    train = parse_annotations("ucf101", ucf / "ucfTrainTestlist", root=root, subset="train", split=1)
    assert train.class_names == ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]
    assert [(Path(r.path).relative_to(root).as_posix(), r.label) for r in train.records] == [
        ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", 0),
        ("HandstandPushups/v_HandStandPushups_g08_c01.avi", 1),
    ]
    assert len(train.problems) == 1 and "trainlist01.txt:3" in train.problems[0] and "'4'" in train.problems[0]
    test = parse_annotations("ucf101", ucf / "ucfTrainTestlist", root=root, subset="val", split=1)
    assert [r.label for r in test.records] == [0, 1, 2] and not test.problems  # labels from the folder, any case
    split2 = parse_annotations("ucf101", ucf / "ucfTrainTestlist", root=root, subset="train", split=2)
    assert [r.label for r in split2.records] == [2]


# ---------------------------------------------------------------------------------------------------------- HMDB51
def test_hmdb51_split_files_with_odd_names(tmp_path):
    splits = tmp_path / "testTrainMulti_7030_splits"
    write(splits / "shoot_bow_test_split1.txt",
          "6arrowswithin30seconds_shoot_bow_f_nm_np1_fr_med_3.avi 2 \n"
          "Bow (and) arrow & more!_shoot_bow_f_nm_np1_fr_med_1.avi 1 \n"
          "unused_shoot_bow_f_nm_np1_fr_med_2.avi 0 \n", "\r\n")
    write(splits / "golf_test_split1.txt", "Golf_Tips_-_Hit_The_Driver_300+_Yards!!!_golf_f_nm_np1_fr_med_0.avi 1 \n")
    write(splits / "golf_test_split2.txt", "Golf_Tips_-_Hit_The_Driver_300+_Yards!!!_golf_f_nm_np1_fr_med_0.avi 2 \n")
    root = tmp_path / "videos"
    train = parse_annotations("hmdb51", splits, root=root, subset="train", split=1)
    assert train.class_names == ["golf", "shoot_bow"]  # the class names exist only in the split file names
    assert sorted((Path(r.path).relative_to(root).as_posix(), r.label) for r in train.records) == [
        ("golf/Golf_Tips_-_Hit_The_Driver_300+_Yards!!!_golf_f_nm_np1_fr_med_0.avi", 0),
        ("shoot_bow/Bow (and) arrow & more!_shoot_bow_f_nm_np1_fr_med_1.avi", 1),
    ]
    val = parse_annotations("hmdb51", splits, root=root, subset="val", split=1)
    assert [Path(r.path).name for r in val.records] == ["6arrowswithin30seconds_shoot_bow_f_nm_np1_fr_med_3.avi"]
    val2 = parse_annotations("hmdb51", splits, root=root, subset="val", split=2)
    assert [r.label for r in val2.records] == [0] and val2.class_names == ["golf"]


# -------------------------------------------------------------------------------------------------------- Charades
CHARADES_CSV = """id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length
46GP8,HR43,Kitchen,6,7,Yes,"A person cooks, then eats.",food;dish,"Cooking.",c002 11.90 21.20;c000 0.00 12.60,24.83
N11GT,0KZ7,Stairs,6,7,Yes,A person walks.,stairs,Walking up the stairs.,,17.50
ZZZZZ,0KZ7,Stairs,6,7,Yes,x,y,z,c999 1.0 2.0,5.0
"""


def test_charades_multi_label_with_spans_and_empty_actions(tmp_path):
    classes = write(tmp_path / "Charades_v1_classes.txt",
                    "c000 Holding some clothes\nc001 Putting clothes somewhere\nc002 Taking some food from somewhere\n")
    ann = parse_annotations("charades", write(tmp_path / "Charades_v1_train.csv", CHARADES_CSV),
                            root=tmp_path / "Charades_v1_480", classes=classes)
    assert ann.class_names == ["Holding some clothes", "Putting clothes somewhere", "Taking some food from somewhere"]
    first, empty, bad = ann.records
    assert Path(first.path).name == "46GP8.mp4" and first.label == [0, 2]
    assert first.meta["spans"] == [(2, 11.9, 21.2), (0, 0.0, 12.6)] and first.meta["length_s"] == 24.83
    assert empty.label == [] and empty.meta["spans"] == []  # a video with no action is still a video
    assert bad.label == [] and len(ann.problems) == 1 and "c999" in ann.problems[0]
    with pytest.raises(UserError, match="Charades needs"):
        parse_annotations("charades", tmp_path / "Charades_v1_train.csv", root=tmp_path)


# -------------------------------------------------------------------------------------------------------- Kinetics
def test_kinetics_csv_label_folders_and_shared_class_order(tmp_path):
    root = tmp_path / "videos"
    (root / "arm wrestling").mkdir(parents=True)
    (root / "abseiling").mkdir()
    (root / "abseiling" / "-xyz_9_000000_000010.webm").write_bytes(b"x")  # a download that is not .mp4
    train = write(tmp_path / "train.csv", "label,youtube_id,time_start,time_end,split,is_cc\n"
                                          "arm wrestling,a1b2c3,10,20,train,0\nabseiling,-xyz_9,0,10,train,0\n"
                                          "zumba,q,5,15,train,0\n")
    val = write(tmp_path / "validate.csv", "label,youtube_id,time_start,time_end,split\nzumba,v1,30,40,val\n"
                                           "yodelling,v2,1,11,val\n")
    ann = parse_annotations("kinetics", train, root=root)
    assert ann.class_names == ["abseiling", "arm wrestling", "zumba"]
    paths = [Path(r.path).relative_to(root).as_posix() for r in ann.records]
    assert paths == ["arm wrestling/a1b2c3_000010_000020.mp4", "abseiling/-xyz_9_000000_000010.webm",
                     "q_000005_000015.mp4"]  # no zumba folder: flat layout
    assert ann.records[0].meta == {"youtube_id": "a1b2c3", "time_start": 10.0, "time_end": 20.0}
    v = parse_annotations("kinetics", val, root=root, subset="val", class_source=train)
    assert v.class_names == ann.class_names and [r.label for r in v.records] == [2]  # zumba keeps index 2
    assert "yodelling" in v.problems[0]


def test_charades_actions_ending_before_they_start_warn_once_with_the_count(tmp_path, caplog):
    classes = write(tmp_path / "classes.txt", "c000 a\nc001 b\nc002 c\n")
    rows = "id,actions,length\nA,c000 5.0 2.0;c001 1.0 3.0,9\nB,c002 8.0 7.5,9\nC,c001 0 1,9\n"
    with caplog.at_level(logging.WARNING, logger="istpan.data.datasets"):
        ann = parse_annotations("charades", write(tmp_path / "t.csv", rows), root=tmp_path, classes=classes)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "2 actions end before they start" in warnings[0] and "t.csv:2" in warnings[0]
    assert [r.label for r in ann.records] == [[0, 1], [2], [1]]  # kept as listed, labels unchanged
    assert not ann.problems


def test_kinetics_csv_without_label_column_is_one_error(tmp_path):
    test_csv = write(tmp_path / "test.csv", "youtube_id,time_start,time_end,split\n"
                                            + "".join(f"v{i},0,10,test\n" for i in range(50)))
    with pytest.raises(UserError) as err:
        parse_annotations("kinetics", test_csv, root=tmp_path)
    assert "no 'label' column" in str(err.value) and "50 rows" in str(err.value) and "\n" not in str(err.value)


# --------------------------------------------------------------------------------------------------- folder, list
def test_folder_per_class(tmp_path):
    for rel in ("train/walk/a.mp4", "train/walk/nested/b.AVI", "train/run/c.mkv", "train/run/notes.txt"):
        write(tmp_path / rel, "x")
    (tmp_path / "train/run/d.mp4").mkdir()  # not a video, but listed: the decoder says what it is (issue 10)
    ann = parse_annotations("folder", tmp_path / "train")
    assert ann.class_names == ["run", "walk"]
    assert [(Path(r.path).name, r.label) for r in ann.records] == [("c.mkv", 0), ("d.mp4", 0), ("a.mp4", 1),
                                                                   ("b.AVI", 1)]


def test_list_file_names_ids_multi_label_spaces_and_tabs(tmp_path):
    classes = write(tmp_path / "classes.txt", "open door\nclose door\nsit\n")
    lst = write(tmp_path / "train.txt", "# comment\nclips/my video 1.mp4\topen door\nclips/b.mp4 2\n"
                                        "clips/c.mp4 0,2\nclips/d.mp4 dance\n\n")
    ann = parse_annotations("list", lst, root=tmp_path / "data", classes=classes)
    assert [(Path(r.path).name, r.label) for r in ann.records] == [("my video 1.mp4", 0), ("b.mp4", 2),
                                                                   ("c.mp4", [0, 2])]
    assert Path(ann.records[0].path).parent == tmp_path / "data" / "clips"
    assert len(ann.problems) == 1 and "train.txt:5" in ann.problems[0] and "dance" in ann.problems[0]
    no_root = parse_annotations("list", lst, classes=classes)  # relative to the list file when there is no root
    assert Path(no_root.records[1].path) == tmp_path / "clips" / "b.mp4"


def test_list_file_class_names_derived_from_training_list(tmp_path):
    train = write(tmp_path / "train.txt", "a.mp4 jump\nb.mp4 walk\nc.mp4 sit\n")
    val = write(tmp_path / "val.txt", "d.mp4 walk\n")
    ann = parse_annotations("list", val, subset="val", class_source=train)
    assert ann.class_names == ["jump", "sit", "walk"] and ann.records[0].label == 2
    ids = parse_annotations("list", write(tmp_path / "ids.txt", "a.mp4 0\nb.mp4 3\n"))
    assert ids.class_names == ["0", "1", "2", "3"] and [r.label for r in ids.records] == [0, 3]


# --------------------------------------------------------------------------------------------------- build_dataset
def test_build_dataset_errors_name_the_missing_thing(tmp_path):
    lst = write(tmp_path / "train.txt", "a.mp4 0\n")
    with pytest.raises(UserError, match=r"data.train_annotations: '.*nope.txt' does not exist"):
        build_dataset(DataConfig(format="list", train_annotations=str(tmp_path / "nope.txt")), split="train",
                      train=True)
    with pytest.raises(UserError, match=r"data.root: '.*missing' does not exist"):
        build_dataset(DataConfig(format="list", root=str(tmp_path / "missing"), train_annotations=str(lst)),
                      split="train", train=True)
    with pytest.raises(UserError, match=r"data\.val_annotations: not set"):
        build_dataset(DataConfig(format="list", train_annotations=str(lst)), split="val", train=False)


def test_build_dataset_folder_defaults_to_root_train_and_val(tmp_path):
    for rel in ("train/walk/a.mp4", "train/run/b.mp4", "val/walk/c.mp4", "val/run/d.mp4", "val/run/e.mp4"):
        write(tmp_path / rel, "x")
    cfg = DataConfig(format="folder", root=str(tmp_path))
    train = build_dataset(cfg, split="train", train=True)
    val = build_dataset(cfg, split="val", train=False)
    assert train.class_names == val.class_names == ["run", "walk"]
    assert sorted(Path(r.path).name for r in val.records) == ["c.mp4", "d.mp4", "e.mp4"]
    with pytest.raises(UserError, match=r"data\.val_annotations: '.*val' does not exist"):
        build_dataset(DataConfig(format="folder", root=str(tmp_path / "train")), split="val", train=False)


def test_build_dataset_charades_is_multi_hot(tmp_path):
    classes = write(tmp_path / "classes.txt", "c000 a\nc001 b\nc002 c\n")
    csv_path = write(tmp_path / "train.csv", CHARADES_CSV)
    cfg = DataConfig(format="charades", root=str(tmp_path), train_annotations=str(csv_path), classes=str(classes),
                     sampling="uniform", num_frames=4)
    ds = build_dataset(cfg, split="train", train=True)
    assert ds.multi_label and ds.num_classes == 3 and ds.num_frames == 4
    assert torch.equal(ds._label(ds.records[0]), torch.tensor([1.0, 0.0, 1.0]))
    assert torch.equal(ds._label(ds.records[1]), torch.zeros(3))


@pytest.mark.parametrize("val_classes", [["run"], ["run", "swim", "walk"]], ids=["val lacks one", "val has extra"])
def test_build_dataset_folder_val_takes_train_classes(tmp_path, val_classes, caplog):
    """Issue 10.10: train's classes and indices for val; a val class train does not know is skipped with a warning."""
    for cls in ("jump", "run", "walk"):
        write(tmp_path / "train" / cls / "a.mp4", "x")
    for cls in val_classes:
        write(tmp_path / "val" / cls / "b.mp4", "x")
    cfg = DataConfig(format="folder", root=str(tmp_path))
    with caplog.at_level(logging.WARNING):
        val = build_dataset(cfg, split="val", train=False)
    assert val.class_names == build_dataset(cfg, split="train", train=True).class_names == ["jump", "run", "walk"]
    labels = {Path(r.path).parent.name: r.label for r in val.records}
    assert labels == {c: ["jump", "run", "walk"].index(c) for c in val_classes if c != "swim"}
    skipped = [r.getMessage() for r in caplog.records if "annotation lines skipped" in r.getMessage()]
    assert bool(skipped) == ("swim" in val_classes) and all("'swim'" in m for m in skipped)
