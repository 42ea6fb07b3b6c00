"""End to end in headless Chromium: `blastscope serve` on a free port, an upload, a prediction and a heat map (and an
"uncertain — refer" badge on a cell inside the run's refer band), a bad file dropped beside a good cell shown on its
own card, and a smear photograph scanned into an overlay, a verdict and a list of its white cells."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from blastscope.api import load
from blastscope.data.synth import smear_field
from blastscope.runs import load_run
from blastscope.workflows.scan.photograph import GREY_PHOTOGRAPH_REASON

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)

BROWSER_MISSING = (
    None
    if CHROMIUM.exists() and CHROMEDRIVER.exists()
    else "headless test needs /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium chromium-driver)"
)
"""Checked before any fixture runs, so a machine without a browser skips without copying a run or starting a server;
on CI (``CI=true``) it fails instead."""

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(bool(BROWSER_MISSING) and os.environ.get("CI") != "true", reason=str(BROWSER_MISSING)),
]


@pytest.fixture(scope="module")
def banded_run(tiny_run: Path, cell_images: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of ``tiny_run`` whose refer band holds the first cell of ``cell_images`` and not the last: the first is
    "uncertain — refer", the last is called (the band's lower edge is the threshold). Served by PyTorch: the page is
    the same for either backend, the cnn (exported in seconds) explains no hem cell, and an efficientnet_lite0 export
    takes 20-30 s; tests/api/test_one_answer.py serves an ONNX backend."""
    run_dir = Path(shutil.copytree(tiny_run, tmp_path_factory.mktemp("banded") / tiny_run.name))
    run = load_run(run_dir)
    positive = run.classes.index(run.operating_point.positive_class)
    first, last = load(run_dir).predict_proba([cell_images[0], cell_images[-1]])[:, positive]
    assert first != last
    half = abs(first - last) / 2
    band = (float(first - half), float(first + half))
    run.save_operating_point(replace(run.operating_point.with_threshold(band[0], "test"), refer_band=band))
    return run_dir


@pytest.fixture(scope="module")
def server(banded_run: Path, start_server: Callable[..., AbstractContextManager[Any]]) -> Iterator[str]:
    with start_server(banded_run) as running:
        yield running.url


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    if BROWSER_MISSING:  # only on CI, where the skip above does not apply
        pytest.fail(BROWSER_MISSING)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def test_upload_shows_prediction_and_heatmap(server: str, browser, cell_images: list[Path], tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server)
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "model-backend").text.startswith("torch"))
    uploads = cell_images[:1] + cell_images[-1:]
    browser.find_element(By.ID, "file-input").send_keys("\n".join(str(path.resolve()) for path in uploads))
    WebDriverWait(browser, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card")) == len(uploads))
    rendered = lambda d: all(  # noqa: E731
        d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", image)
        for image in d.find_elements(By.CSS_SELECTOR, ".card img")
    )
    WebDriverWait(browser, 20).until(rendered)

    cards = browser.find_elements(By.CSS_SELECTOR, ".card")
    by_name = {card.find_element(By.CSS_SELECTOR, ".file-name").text: card for card in cards}
    assert set(by_name) == {path.name for path in uploads}
    for card in cards:
        assert card.find_element(By.CSS_SELECTOR, ".label").text in {"ALL", "HEM"}
        widths = [bar.value_of_css_property("width") for bar in card.find_elements(By.CSS_SELECTOR, ".bar span")]
        assert len(widths) == 2
        assert len(card.find_elements(By.CSS_SELECTOR, ".bar .refer-band")) == 1  # on p(ALL)'s bar, at the threshold
        assert card.find_element(By.CSS_SELECTOR, "img.gradcam").get_attribute("src").startswith("data:image/png")
        assert not card.find_element(By.CSS_SELECTOR, ".gradcam-note").is_displayed()
    referred, called = by_name[uploads[0].name], by_name[uploads[1].name]
    assert referred.find_element(By.CSS_SELECTOR, ".refer-badge").text == "uncertain — refer"
    why = referred.find_element(By.CSS_SELECTOR, ".refer-why").text
    assert re.fullmatch(r"p\(ALL\) 0\.\d+ inside the refer band 0\.\d+–0\.\d+", why), why
    assert not called.find_element(By.CSS_SELECTOR, ".referral").is_displayed()
    assert browser.find_element(By.ID, "model-referral").text.startswith("p(ALL) 0.")
    assert browser.find_element(By.ID, "error").get_attribute("hidden") is not None
    assert browser.find_element(By.ID, "attribution").text.startswith("Trained on synthetic cells")

    screenshot = Path(os.environ.get("BLASTSCOPE_SCREENSHOT_DIR", tmp_path)) / "serve-page.png"
    assert browser.save_screenshot(str(screenshot))


def test_a_bad_file_beside_a_good_cell_gets_its_own_card(
    server: str, browser, cell_images: list[Path], tmp_path: Path
) -> None:
    """A cell and the AppleDouble ``._`` file a Mac zip leaves beside it, dropped together: one is classified, the
    other is shown as not classified with the reason, and the page says so."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    appledouble = tmp_path / f"._{cell_images[0].name}"
    appledouble.write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    browser.get(server)
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "model-backend").text.startswith("torch"))
    uploads = [appledouble, cell_images[0]]
    browser.find_element(By.ID, "file-input").send_keys("\n".join(str(path.resolve()) for path in uploads))
    WebDriverWait(browser, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card")) == 2)

    failed = browser.find_elements(By.CSS_SELECTOR, ".card.failed")
    assert len(failed) == 1
    assert failed[0].find_element(By.CSS_SELECTOR, ".file-name").text == appledouble.name
    assert failed[0].find_element(By.CSS_SELECTOR, ".label").text.lower() == "not classified"
    reason = failed[0].find_element(By.CSS_SELECTOR, ".reason").text
    assert reason == "not a BMP, PNG, JPEG, TIFF or WebP image despite its extension; delete or convert it (HTTP 415)"
    (classified,) = browser.find_elements(By.CSS_SELECTOR, ".card:not(.failed)")
    assert classified.find_element(By.CSS_SELECTOR, ".file-name").text == cell_images[0].name
    assert classified.find_element(By.CSS_SELECTOR, ".label").text in {"ALL", "HEM"}
    assert browser.find_element(By.ID, "error").get_attribute("hidden") is not None
    assert browser.find_element(By.ID, "status").text.startswith("1 of 2 files classified")

    screenshot = Path(os.environ.get("BLASTSCOPE_SCREENSHOT_DIR", tmp_path)) / "serve-page-bad-file.png"
    assert browser.save_screenshot(str(screenshot))


def test_a_smear_photograph_shows_its_overlay_verdict_and_cell_list(server: str, browser, tmp_path: Path) -> None:
    """The page's smear mode: a synthetic field with three whole white cells (and one cut by the border) is scanned;
    its card shows the overlay, the verdict, the summary and one row per whole cell."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    photograph = tmp_path / "smear-field.png"
    Image.fromarray(smear_field(0, height=480, width=640, white_cells=3, cut_cells=1).image).save(photograph)
    browser.get(server)
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "model-backend").text.startswith("torch"))
    browser.find_element(By.ID, "mode-smear").click()
    assert browser.find_element(By.CSS_SELECTOR, ".drop-title").text == "Drop smear photographs here"
    browser.find_element(By.ID, "file-input").send_keys(str(photograph.resolve()))
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".scan-card"))
    card = browser.find_element(By.CSS_SELECTOR, ".scan-card")
    overlay = card.find_element(By.CSS_SELECTOR, "img.overlay")
    WebDriverWait(browser, 20).until(
        lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", overlay)
    )
    assert overlay.get_attribute("src").startswith("data:image/png")
    assert browser.execute_script("return arguments[0].naturalWidth", overlay) == 640
    assert card.find_element(By.CSS_SELECTOR, ".file-name").text == photograph.name
    verdict = card.find_element(By.CSS_SELECTOR, ".scan-verdict").text
    assert verdict in {"ALL cells present", "no ALL cell called", "uncertain — refer"}
    summary = card.find_element(By.CSS_SELECTOR, ".scan-summary").text
    assert " of 3 white cells called ALL" in summary and "1 cut by the border" in summary
    rows = card.find_elements(By.CSS_SELECTOR, ".cell-list tbody tr")
    assert [row.find_elements(By.TAG_NAME, "td")[0].text for row in rows] == ["1", "2", "3"]
    assert all(row.find_elements(By.TAG_NAME, "td")[1].text in {"ALL", "HEM"} for row in rows)
    assert card.find_element(By.CSS_SELECTOR, ".p-column").text == "P(ALL)"  # upper-cased by the table's style
    assert browser.find_element(By.ID, "error").get_attribute("hidden") is not None

    screenshot = Path(os.environ.get("BLASTSCOPE_SCREENSHOT_DIR", tmp_path)) / "serve-page-smear.png"
    assert browser.save_screenshot(str(screenshot))


def test_a_grey_photograph_beside_a_smear_gets_its_own_card(server: str, browser, tmp_path: Path) -> None:
    """Smear mode, a colour field and a grey one dropped together: the colour one is scanned, the grey one is shown as
    not scanned with its one-line reason (a 422 of its own), not as an error of the whole upload."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    field = Image.fromarray(smear_field(0, height=480, width=640, white_cells=3, cut_cells=1).image)
    colour, grey = tmp_path / "colour-field.png", tmp_path / "grey-field.png"
    field.save(colour)
    field.convert("L").save(grey)
    browser.get(server)
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "model-backend").text.startswith("torch"))
    browser.find_element(By.ID, "mode-smear").click()
    browser.find_element(By.ID, "file-input").send_keys(f"{colour.resolve()}\n{grey.resolve()}")
    WebDriverWait(browser, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card")) == 2)

    (failed,) = browser.find_elements(By.CSS_SELECTOR, ".card.failed")
    assert failed.find_element(By.CSS_SELECTOR, ".file-name").text == grey.name
    assert failed.find_element(By.CSS_SELECTOR, ".reason").text == f"{GREY_PHOTOGRAPH_REASON} (HTTP 422)"
    (scanned,) = browser.find_elements(By.CSS_SELECTOR, ".scan-card")
    assert scanned.find_element(By.CSS_SELECTOR, ".file-name").text == colour.name
    assert browser.find_element(By.ID, "error").get_attribute("hidden") is not None
    assert browser.find_element(By.ID, "status").text.startswith("1 of 2 photographs scanned")


def test_a_p_just_under_the_threshold_never_reads_as_reaching_it(server: str, browser) -> None:
    """p(ALL) 0.4276 under a threshold of 0.42780 read "42.8%" beside "threshold 0.428", as if called ALL, on a cell's
    card and in a smear card's list of cells: both show the decimals that tell p from the threshold, and no more
    elsewhere."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server)
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "model-backend").text.startswith("torch"))
    shown = browser.execute_script(
        """
        const classes = [{name: "hem", display: "HEM"}, {name: "all", display: "ALL"}];
        const point = {positive_class: "all", threshold: 0.4278, decided_by: "chosen on val"};
        const cell = (p) => ({probabilities: {hem: 1 - p, all: p}, label: p < 0.4278 ? "hem" : "all", referred: false});
        const texts = (node, selector) => [...node.querySelectorAll(selector)].map((element) => element.textContent);
        return [0.4276, 0.9].flatMap((p) => {
          const entry = {...point, ...cell(p), file: "c.png", display_label: "?", segmented: false, gradcam_png: null};
          const smear = {...point, file: "f.png", verdict: "x", verdict_text: "x", summary: "x", overlay_png: "",
                         cells: [{...cell(p), cell: 1, centroid_x: 1, centroid_y: 1}]};
          const single = card(new Blob([]), entry, classes), field = scanCard(smear, classes);
          return [texts(single, ".decided-by, .percent"), texts(field, ".decided-by, td:nth-child(3)")];
        });
        """
    )
    assert shown == [
        ["threshold 0.4278 · chosen on val", "42.76%", "57.24%"],
        ["42.76%", "threshold 0.4278 · chosen on val"],
        ["threshold 0.428 · chosen on val", "90.0%", "10.0%"],
        ["90.0%", "threshold 0.428 · chosen on val"],
    ]


def test_a_cards_note_says_when_its_image_held_several_white_cells(server: str, browser) -> None:
    """A /predict entry's ``note`` (a smear photograph sent as one cell) is shown on its card; no note, nothing."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server)
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "model-backend").text.startswith("torch"))
    shown = browser.execute_script(
        """
        const classes = [{name: "hem", display: "HEM"}, {name: "all", display: "ALL"}];
        const entry = {probabilities: {hem: 0.4, all: 0.6}, label: "all", referred: false, positive_class: "all",
                       threshold: 0.5, decided_by: "x", file: "s.png", display_label: "ALL", gradcam_png: null};
        return [{...entry, note: "s.png holds 2 whole white cells, not one"}, {...entry, note: null}].map((one) => {
          const note = card(new Blob([]), one, classes).querySelector(".note");
          return [note.hidden, note.textContent];
        });
        """
    )
    assert shown == [[False, "s.png holds 2 whole white cells, not one"], [True, ""]]
