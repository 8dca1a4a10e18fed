"""The explain report in a real headless browser (Debian's chromium + chromium-driver, driven by selenium).

Checks what a user would see opening OUTDIR/index.html from disk: no console errors, every image decoded
(naturalWidth > 0), every video playable, and a full-page screenshot (kept in tmp_path and, for humans, in
outputs/tests/report_browser.png of the repository).

Needs: `apt-get install chromium chromium-driver` (`make test` does it when root) and the `selenium` dev extra.
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from browser import headless_chromium, wait_for
from PIL import Image
from videos import make_video

from istpan.inference.explain import explain_videos
from istpan.inference.windows import sliding_window_predict
from istpan.models import create_model
from istpan.viz.report import write_report

REPO = Path(__file__).resolve().parents[1]
META = {"class_names": ["wave", "jump <b>", "run & walk"],
        "preprocessing": {"input_size": 64, "short_side": 72, "num_segments": 4}}
@pytest.fixture(scope="module")
def browser():
    with headless_chromium() as driver:
        yield driver


_wait = functools.partial(wait_for, timeout=10.0)  # seconds a page condition may take


def _open_and_check(driver, page: Path) -> dict:
    driver.get_log("browser")  # drop anything logged before this page
    driver.get(page.resolve().as_uri())
    assert _wait(driver, "return document.readyState === 'complete'")
    assert _wait(driver, "return Array.from(document.images).every(i => i.complete)")
    videos_ready = "return Array.from(document.querySelectorAll('video')).every(v => v.error || v.readyState >= 2)"
    assert _wait(driver, videos_ready)
    state = driver.execute_script(
        "return {images: Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth]),"
        " videos: Array.from(document.querySelectorAll('video')).map(v => [v.getAttribute('src'),"
        " v.error ? v.error.code : null, v.videoWidth]),"
        " height: document.documentElement.scrollHeight}"
    )
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert errors == [], f"console errors on {page}: {errors}"
    broken = [src for src, width in state["images"] if width == 0]
    assert broken == [], f"images that did not load: {broken}"
    assert all(err is None and width > 0 for _, err, width in state["videos"]), state["videos"]
    return state


def _screenshot(driver, height: int, path: Path) -> Path:
    driver.set_window_size(1200, min(max(height, 600), 8000))
    driver.save_screenshot(str(path))
    return path


def test_report_in_headless_chromium(tmp_path, browser):
    torch.manual_seed(0)
    model = create_model("istpan_tiny", num_classes=3, input_size=64).eval()
    videos = tmp_path / "videos"
    a = make_video(videos / "Golf_Tips_-_Hit 300+ Yards!!! (1).mp4", num_frames=30, size=(72, 96))  # HMDB51-style
    b = make_video(videos / "b.avi", num_frames=20, size=(72, 72), codec="mpeg4")
    broken = videos / "broken.mp4"
    broken.write_bytes(b"\x00" * 64)
    out = tmp_path / "report dir"  # a space in the folder too
    entries = explain_videos(model, META, [a, b, broken], out, levels=True)
    assert [e.get("error") is None for e in entries] == [True, True, False]

    state = _open_and_check(browser, out / "index.html")
    expected_images = sum(1 for e in entries for k in ("grid", "levels_grid", "timeline") if e.get(k))
    assert len(state["images"]) == expected_images == 6
    assert len(state["videos"]) == 2
    text = browser.find_element("tag name", "body").text
    assert "jump <b>" in text or "run & walk" in text  # class names shown as text, not parsed as HTML
    assert "could not explain this video" in text

    shot = _screenshot(browser, state["height"], tmp_path / "report_browser.png")
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[0] >= 600 and pixels.std() > 10  # a real page, not a blank one
    keep = REPO / "outputs" / "tests"
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, keep / "report_browser.png")
    print(f"screenshot: {shot} (copy in {keep / 'report_browser.png'})")


def test_untrimmed_report_in_headless_chromium(tmp_path, browser):
    torch.manual_seed(0)
    model = create_model("istpan_tiny", num_classes=3, input_size=64).eval()
    path = make_video(tmp_path / "long video.mp4", num_frames=80, size=(64, 64), fps=20)
    out = tmp_path / "untrimmed"
    result = sliding_window_predict(model, META, path, window=1.0, stride=0.5, unit="seconds", threshold=0.3,
                                    outdir=out / "plots")
    write_report(out, [result], title="sliding windows")
    state = _open_and_check(browser, out / "index.html")
    assert len(state["images"]) == len(result["timelines"]) >= 3
    _screenshot(browser, state["height"], tmp_path / "untrimmed_browser.png")
