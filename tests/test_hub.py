"""Hub hygiene: what ``push_folder_to_hub`` uploads from a training folder, and what the model cards say."""

from __future__ import annotations

import shutil
from pathlib import Path

import huggingface_hub
from huggingface_hub import ModelCard, RepoUrl
from huggingface_hub.utils import filter_repo_objects

from iter_diffusers.conversion import OFFICIAL_RELEASE_URL, pipeline_files, push_folder_to_hub
from iter_diffusers.model_card import converted_model_card, recorded_source_files, trained_model_card
from iter_diffusers.pipelines.hub_code import HUB_MODULES

TRAINING = {"stage": "lq", "steps": "10"}


def _training_folder(converted_dir: Path, pipe, root: Path) -> Path:
    """What examples/train_iter.py leaves behind: the pipeline, its card and grid, and everything else."""
    out = root / "run"
    shutil.copytree(converted_dir, out)
    for extra in ("checkpoint-10/model.safetensors", "checkpoint-10/random_states_0.pkl",
                  "logs/train_iter/events.out.tfevents.1", "validation/step_000010.png", "training_summary.json"):
        (out / extra).parent.mkdir(parents=True, exist_ok=True)
        (out / extra).write_bytes(b"x")
    (out / "validation_grid.png").write_bytes(b"png")
    (out / "unrelated.png").write_bytes(b"png")
    trained_model_card(pipe, title="t", description="d", training=TRAINING, metrics={"val/psnr": 21.5},
                       images=["validation_grid.png"]).save(out / "README.md")
    return out


def test_push_uploads_only_the_pipeline(converted_dir, pipe, tmp_path, monkeypatch):
    out = _training_folder(converted_dir, pipe, tmp_path)
    calls = {}
    monkeypatch.setattr(huggingface_hub, "create_repo",
                        lambda repo_id, **kwargs: RepoUrl(f"https://huggingface.co/{repo_id}"))
    monkeypatch.setattr(huggingface_hub, "upload_folder", lambda **kwargs: calls.update(kwargs))
    push_folder_to_hub(out, "user/iter-x4")
    local = [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()]
    uploaded = set(filter_repo_objects(local, allow_patterns=calls["allow_patterns"],
                                       ignore_patterns=calls.get("ignore_patterns")))
    components = ("vqvae", "encoder", "evaluator", "refiner", "scheduler")
    expected = {p for p in local if p.split("/")[0] in components}
    expected |= {"model_index.json", "README.md", "validation_grid.png"}
    expected |= {f"{module}.py" for module in HUB_MODULES}  # the code plain diffusers runs (trust_remote_code)
    assert uploaded == expected
    assert calls["repo_id"] == "user/iter-x4"


def test_pipeline_files_leave_out_checkpoints_logs_and_validation_dumps(converted_dir, pipe, tmp_path):
    files = pipeline_files(_training_folder(converted_dir, pipe, tmp_path))
    assert "model_index.json" in files and "refiner/diffusion_pytorch_model.safetensors" in files
    assert not [f for f in files if f.startswith(("checkpoint-", "logs/", "validation/")) or f == "unrelated.png"]


def test_trained_card_carries_the_measured_metrics_in_its_model_index(pipe, tmp_path):
    metrics = {"val/reconstruction_psnr": 27.31234, "val/reconstruction_ssim": 0.88}
    trained_model_card(pipe, title="ITER x4 run", description="d", training=TRAINING, metrics=metrics,
                       datasets=["user/photos"]).save(tmp_path / "README.md")
    results = ModelCard.load(tmp_path / "README.md").data.eval_results
    assert [(r.metric_type, r.metric_name, r.metric_value) for r in results] == [
        ("psnr", "val/reconstruction_psnr", 27.3123), ("ssim", "val/reconstruction_ssim", 0.88)]
    assert {(r.dataset_type, r.dataset_split, r.task_type) for r in results} == {
        ("user/photos", "validation", "image-to-image")}

    trained_model_card(pipe, title="t", description="d", training=TRAINING, metrics=None).save(tmp_path / "none.md")
    assert "model-index" not in (tmp_path / "none.md").read_text()


def test_converted_cards_say_where_the_weights_came_from(pipe, converted_dir, tmp_path):
    sources = {"ITER_swinvqgan.pth": "a" * 64, "ITER_x4.pth": "b" * 64}
    card = converted_model_card(pipe, sources, release_url=OFFICIAL_RELEASE_URL)
    card.save(tmp_path / "README.md")
    assert recorded_source_files(tmp_path) == sources
    assert "# ITER x4 (official weights, converted)" in card.text
    assert f"`ITER_x4.pth` (SHA-256 `{'b' * 64}`)" in card.text

    mirror = converted_model_card(pipe, sources, release_url="https://mirror.example/iter/").text
    assert "official weights, converted" not in mirror and "downloaded from https://mirror.example/iter/" in mirror

    local = (converted_dir / "README.md").read_text()  # the random tiny fixtures, converted from local files
    assert "# ITER x4 (converted checkpoints)" in local and "nothing here checked that" in local
    assert "official weights, converted" not in local and "tiny_iter_x4.pth" in local
