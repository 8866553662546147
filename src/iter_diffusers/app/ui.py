"""The gradio page of the ITER demo.

The handlers turn the page's values into calls of :mod:`.restore` and show every problem as a message in the page
(``gr.Error``), never as a crash. Events that read the uploaded image run with ``preprocess=False``: the handler
gets the upload's path (gradio has checked it is one of its uploads) and reads the file itself, so that a corrupt
or oversized file gets our message rather than a decoding error inside gradio.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from pathlib import Path

import gradio as gr
import PIL.Image
import torch

from ..cli.upscale import LoadedImage
from .models import BUNDLED, FOLDER, MODEL_CHOICES, LoadedModel, ModelError, ModelStore
from .restore import Restoration, Settings, plan_run, restore
from .texts import input_text, model_text, run_text, step_caption
from .uploads import MAX_INPUT_PIXELS, UploadError, read_upload
from .views import before_image, step_panel

#: The example inputs: in a source checkout or a Space, not in an installed wheel (then the page has none).
EXAMPLES_DIR = Path(__file__).resolve().parents[3] / "examples" / "images"

COLOR_FIXES = (("Wavelet", "wavelet"), ("AdaIN", "adain"), ("None", "none"))
RESULTS_KEPT_S = 600  # our copy of a result file: gradio has served its own long before

HEADER = """\
# ITER: real-world super-resolution, step by step

Upload a degraded photo or pick an example, then **Upscale**. ITER maps the image to tokens of a VQGAN codebook
(E_l), then repeats: φ_e judges which tokens are right and keeps them, φ_r re-predicts the others. The gallery
shows the image and the keep-mask after each step; steps that φ_e's first judgement makes unnecessary are
skipped (adaptive start).
"""

#: The gallery's cells take the 2:1 shape of its panels (gradio's are square); the input is shown pixel by pixel.
CSS = """
#steps .grid-container { grid-template-rows: none; grid-auto-rows: auto; }
#steps .thumbnail-item { aspect-ratio: 2 / 1; height: auto; }
#input-image img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
"""

FOOTER = """\
---
**Paper:** Chaofeng Chen, Shangchen Zhou, Liang Liao, Haoning Wu, Wenxiu Sun, Qiong Yan, Weisi Lin:
*Iterative Token Evaluation and Refinement for Real-World Super-Resolution*, AAAI 2024
([arXiv:2312.05616](https://arxiv.org/abs/2312.05616), [official code](https://github.com/chaofengc/ITER)).
This page runs the iter-diffusers pipeline (code: Apache-2.0); the licence of the weights in use is stated with
the model above. The bundled demo model is a small model trained on a CPU: it shows the algorithm at work, about as
faithful as bicubic with crisper edges, but it does not restore texture. For real restoration choose the official
weights (a GPU helps).
"""


def build_demo(store: ModelStore, max_pixels: int = MAX_INPUT_PIXELS,
               examples_dir: Path | None = EXAMPLES_DIR) -> gr.Blocks:
    """The page, with the bundled model loaded (and its speed measured) so that the first estimate is instant."""
    model = store.get(BUNDLED)
    handlers = Handlers(store, max_pixels)
    with gr.Blocks(title="ITER super-resolution", analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
        gr.Markdown(HEADER)
        with gr.Row():
            with gr.Column():
                image = gr.Image(label="Low-quality image", type="filepath", image_mode=None, height=256,
                                 sources=["upload", "clipboard"], elem_id="input-image")
                examples = _examples(examples_dir, image)
                input_info = gr.Markdown(handlers.size_limit, elem_id="input-info")
                choice = gr.Dropdown(list(MODEL_CHOICES), value=BUNDLED, label="Model", elem_id="model")
                folder = gr.Textbox(label="Pipeline folder", visible=False, elem_id="folder",
                                    placeholder="path of a converted or trained pipeline folder, then Enter")
                model_info = gr.Markdown(model_text(model), elem_id="model-info")
                settings = _settings_controls(model)
                run = gr.Button("Upscale", variant="primary", elem_id="run")
            with gr.Column():
                comparison = gr.ImageSlider(label="Before (input, bicubic) | after (ITER)", type="pil", format="png",
                                            elem_id="comparison")
                download = gr.File(label="Full-resolution result (PNG)", elem_id="download")
                summary = gr.Markdown(elem_id="summary")
                gallery = gr.Gallery(label="ITER after each executed step: the image | its keep-mask "
                                           "(white: kept, black: re-predicted by φ_r)",
                                     columns=2, object_fit="contain", elem_id="steps")
        gr.Markdown(FOOTER)

        steps, color_fix = settings[0], settings[-1]
        choice.change(lambda value: gr.Textbox(visible=value == FOLDER), choice, folder)
        for event in (choice.change, folder.submit):
            event(handlers.describe_model, [choice, folder], [model_info, color_fix]).then(
                handlers.describe_input, [image, steps], input_info, preprocess=False)
        # image.input: uploads, pastes and clears by the user (image.change fires twice for a corrupt file).
        for event in (image.input, steps.release) + ((examples.load_input_event.then,) if examples else ()):
            event(handlers.describe_input, [image, steps], input_info, preprocess=False)
        run.click(handlers.upscale, [image, choice, folder, *settings],
                  [comparison, download, summary, gallery, input_info], preprocess=False, show_progress_on=comparison)
    return demo


class Handlers:
    """The page's event handlers. They get raw values (``preprocess=False``): the image as gradio's upload record."""

    def __init__(self, store: ModelStore, max_pixels: int) -> None:
        self.store, self.max_pixels = store, max_pixels
        self.size_limit = f"Images of up to {max_pixels / 1e6:g} MP."
        self.results_dir = Path(tempfile.mkdtemp(prefix="iter-sr-app-"))

    def describe_model(self, choice: str, folder: str | None):
        """Load the chosen model: its description and colour-fix choices, or why it cannot be used."""
        if choice == FOLDER and not (folder or "").strip():
            return "Type the path of a pipeline folder above, then press Enter.", gr.skip()
        try:
            model = self.store.get(choice, folder)
        except ModelError as error:
            gr.Warning(str(error))
            return f"**This model cannot be used:** {error}", gr.skip()
        return model_text(model), gr.Radio(choices=_color_fix_choices(model), value="default")

    def describe_input(self, upload: dict | None, steps: float) -> str:
        """Sizes, whole or tiled, and the expected time of the uploaded image with the model in use."""
        if upload is None:
            return self.size_limit
        source, model = _read(upload, self.max_pixels), self.store.current
        if model is None:
            return f"**Input** {source.size[0]}×{source.size[1]} px (no model loaded: no estimate)."
        return _input_text(model, source, int(steps))

    def upscale(self, upload: dict | None, choice: str, folder: str | None, *values, progress=gr.Progress()):
        """Run ITER: the comparison, the file to download, the summary, the per-step gallery, the new estimate."""
        source = _read(upload, self.max_pixels)
        model = _get_model(self.store, choice, folder)
        settings = _settings(*values)
        restoration = _restore(model, source, settings, progress)
        name = f"{Path(upload['path']).stem}_x{model.pipe.upscale_factor}.png"
        return (
            (before_image(source, restoration.result.size), restoration.result),
            str(self._save(restoration.result, name)),
            run_text(restoration),
            [(step_panel(s.image, s.mask), step_caption(s, settings.num_inference_steps)) for s in restoration.steps],
            _input_text(model, source, settings.num_inference_steps),
        )

    def _save(self, image: PIL.Image.Image, name: str) -> Path:
        """``image`` as a PNG named ``name`` in a folder of its own. Gradio serves a copy from its cache (cleaned
        by ``delete_cache``), so results older than ``RESULTS_KEPT_S`` are removed here."""
        for folder in self.results_dir.iterdir():
            if time.time() - folder.stat().st_mtime > RESULTS_KEPT_S:
                shutil.rmtree(folder, ignore_errors=True)
        path = self.results_dir / uuid.uuid4().hex / name
        path.parent.mkdir()
        image.save(path)
        return path


def launch(demo: gr.Blocks, host: str, port: int) -> None:
    """Serve the page on ``host:port``: no share link, no analytics (see :func:`build_demo`), errors shown."""
    demo.queue().launch(server_name=host, server_port=port, share=False, show_error=True, ssr_mode=False,
                        max_file_size="50mb", css=CSS)


def _examples(folder: Path | None, image: gr.Image) -> gr.Examples | None:
    """The example inputs (PNG files of ``folder``), if there are any."""
    paths = sorted(folder.glob("*.png")) if folder and folder.is_dir() else []
    if not paths:
        return None
    return gr.Examples([[str(path)] for path in paths], inputs=[image], cache_examples=False,
                       label="Examples (photos degraded ×4 with the training pipeline; see examples/images)")


def _settings_controls(model: LoadedModel) -> list[gr.Component]:
    """Steps, α, the two temperatures, seed and colour fix, in this order (that of :class:`.Settings`)."""
    defaults = model.pipe.scheduler.config
    with gr.Accordion("Settings", open=False):
        return [
            gr.Slider(1, 16, value=model.pipe.config.num_inference_steps, step=1, label="Refinement steps T"),
            gr.Slider(0.0, 1.0, value=defaults.mask_threshold, step=0.01,
                      label="α: φ_e's trust threshold (tokens with p ≥ α are kept)"),
            gr.Slider(0.05, 3.0, value=defaults.token_temperature, step=0.05,
                      label="Token temperature (φ_r's sampling)"),
            gr.Slider(0.05, 3.0, value=defaults.mask_temperature, step=0.05,
                      label="Mask temperature (which tokens are kept next)"),
            gr.Number(123, precision=0, minimum=0, maximum=2**32 - 1, label="Seed"),
            gr.Radio(_color_fix_choices(model), value="default", label="Colour fix from the input"),
        ]


def _settings(steps, alpha, token_temperature, mask_temperature, seed, color_fix) -> Settings:
    """The raw values of the settings controls (events run with ``preprocess=False``) as :class:`.Settings`."""
    return Settings(int(steps), float(alpha), float(token_temperature), float(mask_temperature), int(seed or 0),
                    None if color_fix == "default" else color_fix)


def _color_fix_choices(model: LoadedModel) -> list[tuple[str, str]]:
    default = model.pipe.config.color_fix or "none"
    return [(f"The model's default ({default})", "default"), *COLOR_FIXES]


def _input_text(model: LoadedModel, source: LoadedImage, steps: int) -> str:
    return input_text(model, *source.size, steps, plan_run(model.pipe, *source.size))


def _read(upload: dict | None, max_pixels: int) -> LoadedImage:
    try:
        return read_upload(None if upload is None else upload["path"], max_pixels)
    except UploadError as error:
        raise gr.Error(str(error), print_exception=False) from None


def _get_model(store: ModelStore, choice: str, folder: str | None) -> LoadedModel:
    try:
        return store.get(choice, folder)
    except ModelError as error:
        raise gr.Error(str(error), print_exception=False) from None


def _restore(model: LoadedModel, source: LoadedImage, settings: Settings, progress: gr.Progress) -> Restoration:
    def report(done: int, total: int, what: str) -> None:
        progress((done, total), desc=what.capitalize(), unit="steps")

    progress(0, desc="Starting")
    try:
        restoration = restore(model, source, settings, report)
    except torch.OutOfMemoryError:
        raise gr.Error("Out of memory: try a smaller image.", print_exception=False) from None
    except ValueError as error:  # a setting the pipeline refuses
        raise gr.Error(str(error), print_exception=False) from None
    if not restoration.plan.per_step_view:
        gr.Warning("The image is too large to run in one piece: it was tiled, without the per-step view.")
    return restoration
