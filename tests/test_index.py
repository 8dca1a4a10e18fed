"""The persistent video index (istpan.data.index) and decoding from encoded bytes (decode.EncodedVideo).

What must hold: a second process never scans a video the index knows (the scan is what costs a full decode), its
answers equal a fresh scan's, a file changed on disk is noticed and re-scanned, concurrent writers lose nothing, and
bytes decode exactly like the file they came from (with the file's index entry, seeking included).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os

import numpy as np
import pytest
from references import naive_decode
from videos import make_video

from istpan.data import decode as decode_mod
from istpan.data import index as video_index
from istpan.data.decode import EncodedVideo, count_frames, index_entry, read_frames


@pytest.fixture(autouse=True)
def fresh_process_state():
    """Each test starts like a new process: no in-memory index, no active persistent index."""
    decode_mod._index_cache.clear()
    decode_mod._counts.clear()
    video_index.use(None)
    video_index.stats.clear()
    yield
    video_index.use(None)
    decode_mod._index_cache.clear()
    decode_mod._counts.clear()


def _forget_memory():
    decode_mod._index_cache.clear()
    decode_mod._counts.clear()


def _no_scan(monkeypatch):
    def scan(path):
        raise AssertionError(f"{path} was scanned although the index knows it")
    monkeypatch.setattr(decode_mod, "_scan", scan)


def test_second_process_reads_the_index_and_never_scans(tmp_path, monkeypatch):
    path = make_video(tmp_path / "v.mp4", num_frames=40, options={"g": "8", "bf": "2"})
    ref = naive_decode(path)
    video_index.use(tmp_path / "index.sqlite")
    assert count_frames(path) == 40  # first process: one scan, stored
    assert video_index.stats["stored"] == 1

    _forget_memory()
    video_index.use(None)
    video_index.stats.clear()
    video_index.use(tmp_path / "index.sqlite")  # a new process: a new connection, empty memory caches
    _no_scan(monkeypatch)
    assert count_frames(path) == 40
    assert np.array_equal(read_frames(path, [3, 33]).numpy(), ref[[3, 33]])
    assert decode_mod._index(path, scan=False).seekable  # the stored keyframes/timestamps allow exact seeks
    assert video_index.stats["hits"] == 1 and video_index.stats["misses"] == 0


def test_entry_round_trip_equals_a_fresh_scan(tmp_path):
    path = make_video(tmp_path / "v.avi", num_frames=23, codec="mpeg4", options={"bf": "2"})
    entry = index_entry(path)
    store = video_index.VideoIndex(tmp_path / "i.sqlite")
    st = path.stat()
    store.put(path, st.st_size, st.st_mtime_ns, entry)
    got = video_index.VideoIndex(tmp_path / "i.sqlite").get(path, st.st_size, st.st_mtime_ns)
    assert got["num_frames"] == entry["num_frames"] == 23
    assert np.array_equal(got["pts"], entry["pts"])
    assert tuple(got["keyframes"]) == tuple(entry["keyframes"])
    assert got["seekable"] == entry["seekable"] and list(got["errors"]) == list(entry["errors"])
    assert store.key(path) == "v.avi"  # relative to the index's folder: the dataset can move with its index


def test_file_changed_on_disk_is_noticed_rescanned_and_replaced(tmp_path, caplog):
    path = make_video(tmp_path / "v.mp4", num_frames=20)
    video_index.use(tmp_path / "index.sqlite")
    assert count_frames(path) == 20
    make_video(path, num_frames=31)  # same name, new content
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    _forget_memory()
    with caplog.at_level(logging.WARNING):
        assert count_frames(path) == 31
    lines = [r.getMessage() for r in caplog.records if "stale" in r.getMessage()]
    assert len(lines) == 1 and str(path) in lines[0]
    assert video_index.stats["stale"] == 1
    _forget_memory()
    assert count_frames(path) == 31 and video_index.stats["hits"] == 1  # the replaced entry is used from now on


def _writer(args):
    db, rank, paths = args
    index = video_index.VideoIndex(db)
    for i, p in enumerate(paths):
        entry = {"num_frames": rank * 1000 + i, "pts": np.arange(rank * 1000 + i), "keyframes": (0,),
                 "seekable": True, "errors": ()}
        index.put(p, i, i, entry)
    return video_index.stats["write_errors"]


def test_concurrent_writers_lose_nothing(tmp_path):
    db = tmp_path / "index.sqlite"
    jobs = [(db, r, [str(tmp_path / f"r{r}_{i}.mp4") for i in range(40)]) for r in range(4)]
    with mp.get_context("fork").Pool(4) as pool:
        assert pool.map(_writer, jobs) == [0, 0, 0, 0]
    index = video_index.VideoIndex(db)
    assert len(index) == 160
    for _, r, paths in jobs:
        for i, p in enumerate(paths[:: 13]):
            got = index.get(p, i * 13, i * 13)
            assert got["num_frames"] == r * 1000 + i * 13 and len(got["pts"]) == r * 1000 + i * 13


def test_unwritable_index_warns_once_and_keeps_working(tmp_path, caplog):
    path = make_video(tmp_path / "v.mp4", num_frames=12)
    bad = tmp_path / "not_a_db.sqlite"
    bad.write_bytes(b"this is not an SQLite file" * 100)
    video_index.use(bad)
    with caplog.at_level(logging.WARNING):
        assert count_frames(path) == 12
        assert count_frames(make_video(tmp_path / "w.mp4", num_frames=9)) == 9
    assert sum("video index" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize(("suffix", "codec", "options"), [
    (".mp4", "libx264", {"g": "6", "bf": "2"}),  # seekable: the shard's entry lets bytes seek too
    (".avi", "mpeg4", {"bf": "2"}),  # never seeked
])
def test_encoded_bytes_decode_exactly_like_the_file(tmp_path, monkeypatch, suffix, codec, options):
    path = make_video(tmp_path / f"v{suffix}", num_frames=50, codec=codec, options=options)
    ref = naive_decode(path)
    entry = index_entry(path)
    video = EncodedVideo("shard-000.tar:000001 (v)", path.read_bytes(), entry)
    _no_scan(monkeypatch)  # the entry travels with the bytes
    idx = [0, 7, 7, 31, 49]
    assert count_frames(video) == 50
    assert np.array_equal(read_frames(video, idx).numpy(), ref[idx])
    assert np.array_equal(read_frames(video, idx, short_side=32).numpy(), naive_decode(path, 32)[idx])


def test_encoded_bytes_without_entry_and_bad_bytes(tmp_path):
    path = make_video(tmp_path / "v.mp4", num_frames=18)
    video = EncodedVideo("x:1 (v.mp4)", path.read_bytes())
    assert count_frames(video) == 18
    assert np.array_equal(read_frames(video, [17]).numpy(), naive_decode(path)[[17]])
    with pytest.raises(decode_mod.VideoError, match=r"^x:2 \(junk\): "):
        count_frames(EncodedVideo("x:2 (junk)", b"\x00garbage" * 50))


def test_data_check_fills_the_index_and_a_second_check_decodes_nothing(tmp_path, monkeypatch, capsys):
    from istpan.cli.main import main

    for i in range(3):
        make_video(tmp_path / "data" / f"v{i}.mp4", num_frames=10 + i)
    (tmp_path / "data" / "train.txt").write_text("".join(f"v{i}.mp4 {i % 2}\n" for i in range(3)))
    args = ["data", "check", "--format", "list", "--annotations", str(tmp_path / "data" / "train.txt"),
            "--workers", "1", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "c1")]) == 0
    db = tmp_path / "data" / video_index.DEFAULT_NAME  # beside the annotations (no data.root)
    assert len(video_index.VideoIndex(db)) == 3
    _forget_memory()
    _no_scan(monkeypatch)
    assert main([*args, "--out", str(tmp_path / "c2")]) == 0
    first, second = ((tmp_path / c / "report.json").read_text() for c in ("c1", "c2"))
    assert first == second
