"""The web demo (``iter-sr-app``): its functions without a browser, then the page itself in Debian's chromium."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from iter_diffusers.app import models, uploads
from iter_diffusers.app.cli import build_parser
from iter_diffusers.app.models import (
    BUNDLED, FOLDER, NO_CARD, OFFICIAL, ModelError, ModelStore, load_model, read_licence, resolve_source,
)
from iter_diffusers.app.restore import Plan, Restoration, Settings, per_step_limit, plan_run, restore
from iter_diffusers.app.speed import SpeedMeter, calibrate, format_duration
from iter_diffusers.app.texts import run_text
from iter_diffusers.app.uploads import UploadError, read_upload
from iter_diffusers.app.views import mask_image
from iter_diffusers.official import OfficialWeightsError
from iter_diffusers.pipelines import acceleration, openvino_engine
from iter_diffusers.pipelines.openvino_engine import OPENVINO_NETWORKS
from iter_diffusers.pipelines.openvino_int8 import int8_available

EXAMPLE = Path(__file__).parents[1] / "examples" / "images" / "chelsea_lq.png"


@pytest.fixture(scope="module")
def demo_model():
    """The bundled model as the page loads it (speed calibrated)."""
    return ModelStore(torch.device("cpu")).get(BUNDLED)


@pytest.fixture()
def lq_32(tmp_path) -> Path:
    """A 32×32 crop of the bundled example: small enough for a fast run with the per-step view."""
    path = tmp_path / "cat_32.png"
    PIL.Image.open(EXAMPLE).convert("RGB").crop((30, 20, 62, 52)).save(path)
    return path


@contextlib.contextmanager
def refiner_calls(pipe):
    """A list that grows by one at each of φ_r's forward calls: one per executed step for a single image."""
    calls = []
    handle = pipe.refiner.register_forward_hook(lambda *args: calls.append(1))
    try:
        yield calls
    finally:
        handle.remove()


# ---------------------------------------------------------------------------------------------------- uploads
def test_missing_upload_asks_for_one():
    with pytest.raises(UploadError, match="Upload an image"):
        read_upload(None)


def test_corrupt_upload_gets_a_message(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n not an image at all")
    with pytest.raises(UploadError, match=r"photo\.png is not a readable image"):
        read_upload(path)


def test_truncated_upload_gets_a_message(tmp_path):
    path = tmp_path / "cut.png"
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:400])
    with pytest.raises(UploadError, match=r"cut\.png: cannot read the image"):
        read_upload(path)


def test_oversized_upload_is_refused_from_its_header(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    PIL.Image.new("RGB", (2000, 1000)).save(path)
    monkeypatch.setattr(uploads, "load_image", lambda _: pytest.fail("the pixels were decoded"))
    expected = r"big\.png is 2000×1000 pixels \(2\.0 MP\); this demo takes images of up to 1 MP "
    with pytest.raises(UploadError, match=expected):
        read_upload(path, max_pixels=1_000_000)


def test_upload_within_the_limit_is_read_like_iter_sr(tmp_path):
    path = tmp_path / "grey_alpha.png"
    PIL.Image.new("LA", (5, 3), (100, 200)).save(path)
    image = read_upload(path, max_pixels=15)
    assert image.size == (5, 3) and image.grayscale and image.alpha is not None
    assert np.allclose(image.rgb, 100 / 255)


# ---------------------------------------------------------------------------------------------------- models
@pytest.mark.parametrize("licence, expected", [
    ("apache-2.0", "Apache-2.0"),
    ("cc-by-nc-sa-4.0", "CC BY-NC-SA 4.0 with the S-Lab licence: **non-commercial use only**"),
    ("mit", "mit"),
])
def test_licence_is_read_from_the_model_card(tmp_path, licence, expected):
    (tmp_path / "README.md").write_text(f"---\nlicense: {licence}\n---\n# A model\n", encoding="utf-8")
    assert read_licence(tmp_path) == expected


def test_folder_without_card_says_the_licence_is_unknown(tmp_path):
    assert read_licence(tmp_path) == NO_CARD
    (tmp_path / "README.md").write_text("# A model card without metadata\n", encoding="utf-8")
    assert read_licence(tmp_path) == "not stated in the folder's model card"


def test_the_page_states_the_licence_of_the_loaded_models_card(converted_dir, tmp_path):
    """A pipeline whose card (as train_iter.py writes it) says cc0-1.0, from scratch: the page says so too."""
    from iter_diffusers import ITERPipeline
    from iter_diffusers.app.texts import model_text
    from iter_diffusers.model_card import trained_model_card, weights_licence

    folder = tmp_path / "scratch"
    shutil.copytree(converted_dir, folder)
    card = trained_model_card(ITERPipeline.from_pretrained(folder), title="t", description="d", training={},
                              metrics=None, **weights_licence(None, None, "cc0-1.0").card_fields())
    card.save(folder / "README.md")
    model = ModelStore(torch.device("cpu")).get(FOLDER, str(folder))
    assert "**Licence of these weights:** CC0 1.0 (trained from scratch)." in model_text(model)


def test_a_licence_nobody_chose_is_stated_as_such(tmp_path):
    (tmp_path / "README.md").write_text("---\nlicense: other\nlicense_name: not-chosen\nweights_origin: derived\n"
                                        "---\n", encoding="utf-8")
    assert read_licence(tmp_path) == ("none chosen by whoever trained them (see the folder's model card) "
                                      "(trained from another pipeline)")


def test_bundled_model_is_loaded_with_its_licence(demo_model):
    assert demo_model.licence == "Apache-2.0"
    assert demo_model.pipe.upscale_factor == 4


@pytest.mark.skipif(not int8_available(), reason="the OpenVINO int8 mode needs the [openvino] extra (openvino, nncf)")
def test_loading_announces_the_one_off_openvino_steps_on_the_console(converted_dir, tmp_path, monkeypatch, capsys):
    """Where auto picks OpenVINO (a CPU without native bf16), a model's first load converts its networks and
    calibrates the int8 decoder, minutes for a large one: the server's console says so as each starts."""
    monkeypatch.setattr(acceleration, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(openvino_engine, "cache_dir", lambda: tmp_path / "openvino")
    model = load_model(converted_dir, torch.device("cpu"))
    assert model.pipe.encoder.openvino_network is not None
    announced = [line for line in capsys.readouterr().err.splitlines() if line.startswith("iter-sr-app: ")]
    # the tiny checkpoints' int8 decoder measures under auto's bar, which is announced too
    expected = [f"converting {name} to OpenVINO" for name in OPENVINO_NETWORKS] + [
        "calibrating the int8 decoder", "the int8 decoder's pictures"]
    assert len(announced) == len(expected)
    assert all(line.startswith(f"iter-sr-app: {text}") for line, text in zip(announced, expected)), announced
    load_model(converted_dir, torch.device("cpu"))  # cached now: nothing to announce
    assert "iter-sr-app:" not in capsys.readouterr().err


@pytest.mark.parametrize("folder, message", [
    ("", "Type the path of a pipeline folder"),
    ("{tmp}/missing", "no such folder"),
    ("{tmp}", r"not a diffusers pipeline folder \(no model_index.json\)"),
])
def test_bad_model_folder_gets_a_message(tmp_path, folder, message):
    with pytest.raises(ModelError, match=message):
        resolve_source(FOLDER, folder.format(tmp=tmp_path))


def test_official_weights_load_with_their_non_commercial_licence(converted_dir, monkeypatch):
    requested = []
    monkeypatch.setattr(models, "official_pipeline_path",
                        lambda name, progress: requested.append(name) or converted_dir)  # no download here
    label = next(label for label, name in OFFICIAL.items() if name == "official-x4")
    model = ModelStore(torch.device("cpu")).get(label)
    assert requested == ["official-x4"]
    assert model.name == "the official ITER weights (official-x4)"
    assert model.licence == "CC BY-NC-SA 4.0 with the S-Lab licence: **non-commercial use only**"


def test_official_weights_that_cannot_be_had_get_a_message(monkeypatch):
    def offline(name, progress):
        raise OfficialWeightsError(f"{name} is not in the cache and HF_HUB_OFFLINE=1 forbids downloading it")

    monkeypatch.setattr(models, "official_pipeline_path", offline)
    with pytest.raises(ModelError, match="The official weights cannot be had: official-x2 is not in the cache"):
        ModelStore(torch.device("cpu")).get(next(label for label, name in OFFICIAL.items() if name == "official-x2"))


# ---------------------------------------------------------------------------------------------------- speed
def test_estimate_is_linear_in_pixels_and_steps_and_kept_per_kind_of_run():
    meter = SpeedMeter()
    meter.record(pixels=1000, steps=2, per_step_view=False, seconds=1.0)
    meter.record(pixels=1000, steps=2, per_step_view=True, seconds=3.0)
    assert meter.estimate(4000, 8, per_step_view=False) == pytest.approx(16.0)
    assert meter.estimate(4000, 8, per_step_view=True) == pytest.approx(48.0)
    meter.record(pixels=1000, steps=1, per_step_view=False, seconds=2.0)  # the latest measurement wins
    assert meter.estimate(1000, 1, per_step_view=False) == pytest.approx(2.0)


def test_calibration_measured_both_kinds_of_run_at_the_models_own_steps(demo_model):
    assert demo_model.speed.estimate(100_000, 8, per_step_view=False) > 0
    assert demo_model.speed.estimate(100_000, 8, per_step_view=True) > 0
    calls = []

    class Recorder:  # the pipeline's interface as calibrate uses it
        config = demo_model.pipe.config

        def __call__(self, image, **kwargs):
            calls.append(kwargs)

    calibrate(Recorder())
    steps = demo_model.pipe.config.num_inference_steps
    assert [(c["num_inference_steps"], c["return_intermediates"]) for c in calls] == [(steps, False), (steps, True)]


@pytest.mark.parametrize("seconds, text", [
    (0.4, "under a second"), (42.4, "about 42 s"), (200, "about 3 min"), (9000, "about 2.5 h"),
])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


# ---------------------------------------------------------------------------------------------------- restore
@pytest.mark.parametrize("alpha", [0.0, None, 1.0])
def test_restore_gives_one_view_per_executed_step(demo_model, lq_32, alpha):
    source = read_upload(lq_32)
    reports = []
    with refiner_calls(demo_model.pipe) as calls:
        restoration = restore(demo_model, source, Settings(num_inference_steps=4, mask_threshold=alpha),
                              lambda *report: reports.append(report))

    assert restoration.plan.per_step_view
    assert restoration.result.size == (128, 128)
    assert len(restoration.steps) == len(calls)
    assert [step.index for step in restoration.steps] == list(range(4 - len(calls), 4))
    if alpha == 0.0:  # φ_e trusts every token: the adaptive start skips every step
        assert calls == []
    kept = [step.kept_tokens for step in restoration.steps]
    assert kept == sorted(kept)  # each step keeps more
    for step in restoration.steps:
        assert step.image.size == step.mask.size == (128, 128)
        per_token = demo_model.pipe.encoder.pixels_per_token  # LQ pixels per token side (the bundled model: 2)
        assert step.num_tokens == (32 // per_token) ** 2
        assert np.count_nonzero(np.asarray(step.mask)) == step.kept_tokens * (4 * per_token) ** 2
    # one report per step that ran, skipped steps counted as done
    assert [done for done, _, _ in reports] == [step.index + 1 for step in restoration.steps]
    assert {total for _, total, _ in reports} <= {4}


def test_restore_tiles_what_does_not_fit_without_the_per_step_view(demo_model, lq_32, monkeypatch):
    monkeypatch.setattr(demo_model.pipe, "auto_tile_shape", lambda height, width, padding, batch=1: (16, 16))
    reports = []
    # α = 0.7: steps run in every tile (at the bundled model's α = 0 every step is skipped and nothing reports)
    restoration = restore(demo_model, read_upload(lq_32), Settings(num_inference_steps=2, mask_threshold=0.7),
                          lambda *report: reports.append(report))
    assert restoration.plan == Plan((16, 16), 4)
    assert restoration.steps == []
    assert restoration.result.size == (128, 128)
    assert reports[-1][:2] == (8, 8) and reports[-1][2].startswith("tile 4 of 4, refinement step 2 of 2")


def test_per_step_limit_is_where_tiling_starts(demo_model):
    side = per_step_limit(demo_model.pipe)
    assert plan_run(demo_model.pipe, side, side).per_step_view
    assert not plan_run(demo_model.pipe, side + 1, side + 1).per_step_view


# ---------------------------------------------------------------------------------------------------- views, texts
def test_mask_image_marks_kept_tokens_white():
    kept = np.array([[True, False, True], [False, True, False]])
    mask = np.asarray(mask_image(kept, pixels_per_token=4, size=(10, 7)))
    assert mask.shape == (7, 10)
    assert mask[0, 0] == 255 and mask[0, 4] == 0 and mask[0, 9] == 255 and mask[6, 5] == 255 and mask[6, 0] == 0


def test_run_text_says_which_steps_were_skipped():
    image = PIL.Image.new("RGB", (128, 96))
    restoration = Restoration(image, Plan(None), 8, [object()] * 5, 2.0)
    assert run_text(restoration) == (
        "Restored to 128×96 px in 2.0 s; 5 of 8 refinement steps ran. Steps 1–3 were skipped: φ_e already "
        "trusted more tokens than they keep (adaptive start)."
    )
    restoration.steps = []
    assert "none of the 8 steps ran" in run_text(restoration)


def test_cli_serves_on_localhost_7860_by_default(monkeypatch):
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    args = build_parser().parse_args([])
    assert (args.host, args.port) == ("127.0.0.1", 7860)


# ---------------------------------------------------------------------------------------------------- browser
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update", "--no-first-run",
                  "--disable-sync", "--window-size=1400,1700")
APP_START_TIMEOUT = 300  # seconds: imports, model load and speed calibration on a busy 2-core machine
RUN_TIMEOUT = 300


@pytest.fixture()
def browser(tmp_path):
    """Debian's chromium through its chromedriver (selenium), headless, as root, with a fresh profile."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
    pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[app]')")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("chromium or chromedriver is not installed (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # to list every request the page makes
    browser = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture()
def app_url(tmp_path):
    """``iter-sr-app`` serving on 127.0.0.1 at a free port, in its own process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url, log_path = f"http://127.0.0.1:{port}/", tmp_path / "app.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "iter_diffusers.app.cli", "--host", "127.0.0.1",
                                    "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + APP_START_TIMEOUT
            while not _responds(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"iter-sr-app did not start:\n{log_path.read_text()}")
                time.sleep(1)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=30)


def _responds(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def _upload(browser, path: Path) -> None:
    browser.find_element("css selector", "#input-image input[type=file]").send_keys(str(path))


def _text(browser, element_id: str) -> str:
    return browser.execute_script(f"return document.getElementById('{element_id}').innerText")


def _toasts(browser) -> list[str]:
    """The messages (gr.Error, gr.Warning) shown in the page."""
    return [toast.text for toast in browser.find_elements("css selector", ".toast-body")]


def _external_requests(browser, origin: str) -> list[str]:
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            if url.startswith(("http:", "https:", "ws:", "wss:")) and not url.split("//", 1)[1].startswith(origin):
                urls.append(url)
    return urls


def test_page_upscales_an_upload_in_chromium(browser, app_url, demo_model, lq_32, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(app_url)
    wait = WebDriverWait(browser, 60)
    wait.until(lambda b: b.find_elements("css selector", "#input-image input[type=file]"))

    _upload(browser, lq_32)
    wait.until(lambda b: "Expected time" in _text(b, "input-info"))
    assert "Input 32×32 px → output 128×128 px; runs in one piece" in _text(browser, "input-info")
    browser.find_element("css selector", "#run").click()
    WebDriverWait(browser, RUN_TIMEOUT).until(
        lambda b: "Restored" in _text(b, "summary") or _toasts(b))
    assert "Restored to 128×128 px" in _text(browser, "summary"), _toasts(browser)

    screenshot = tmp_path / "iter-sr-app.png"
    assert browser.save_screenshot(str(screenshot)) and PIL.Image.open(screenshot).size[0] > 0

    sizes = browser.execute_script(
        "return [...document.querySelectorAll('#comparison img')].map(i => [i.naturalWidth, i.naturalHeight])")
    assert sizes == [[128, 128], [128, 128]]  # before (bicubic) and after, both ×4
    link = browser.find_element("css selector", "#download a[href*='file=']").get_attribute("href")
    with urllib.request.urlopen(link, timeout=30) as response:
        assert PIL.Image.open(response).size == (128, 128)

    steps = demo_model.pipe.config.num_inference_steps
    with refiner_calls(demo_model.pipe) as calls:  # the page's defaults: the model's T and α
        demo_model.pipe(read_upload(lq_32).rgb, num_inference_steps=steps, tile_size=None)
    gallery = browser.find_elements("css selector", "#steps img[alt^='Step ']")
    assert len(gallery) == len(calls)
    # the bundled model's α = 0 trusts every token, so no step runs by default; either way the page says how many
    expected = f"{len(calls)} of {steps} refinement steps ran" if calls else f"none of the {steps} steps ran"
    assert expected in _text(browser, "summary")

    assert _external_requests(browser, app_url.split("//", 1)[1]) == []  # works offline

    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    _upload(browser, corrupt)
    wait.until(lambda b: _toasts(b))
    assert "corrupt.png is not a readable image (unknown format or corrupt file)." in _toasts(browser)[0]
    assert "Restored to 128×128 px" in _text(browser, "summary")  # the page goes on
