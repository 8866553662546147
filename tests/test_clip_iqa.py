"""CLIP-IQA through transformers (``iter_diffusers.evaluation.clip_iqa`` and ``iter-sr-eval --clipiqa``), on a tiny
random CLIP with a tokenizer and an image processor built offline."""

from __future__ import annotations

import contextlib
import io
import json
import string

import numpy as np
import PIL.Image
import pytest
import torch

from iter_diffusers.evaluation.cli import main as iter_sr_eval
from iter_diffusers.evaluation.clip_iqa import clip_iqa_metric, clip_iqa_probabilities

CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A folder laid out like openai/clip-vit-base-patch16 (model, tokenizer, preprocessor_config.json), tiny and
    random: a character-level BPE vocabulary (no merges), 1-layer text and vision towers, 32-px images."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    folder = tmp_path_factory.mktemp("tiny-clip")
    symbols = sorted(set(string.ascii_lowercase + string.punctuation))
    vocab = {token: i for i, token in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": 32},
        "resample": 3, "do_center_crop": True, "crop_size": {"height": 32, "width": 32}, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
    }))
    torch.manual_seed(0)
    eos = vocab["<|endoftext|>"]
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=32, bos_token_id=eos - 1, eos_token_id=eos,
                         pad_token_id=eos),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    model = CLIPModel(config)
    with torch.no_grad():  # nearly equal prompt embeddings, so that the probabilities are not all 0 or 1
        model.text_model.final_layer_norm.weight.fill_(0.02)
        model.text_model.final_layer_norm.bias.normal_()
    model.save_pretrained(folder)
    return folder


def _photo(seed: int, size=(48, 40)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def test_probabilities_follow_the_torchmetrics_definition():
    image = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    text = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 1.0], [1.0, 1.0]])  # pairs (good, bad), (good2, bad2)
    cos = torch.tensor([[0.6, 0.8, 0.8, 7 / 50**0.5], [1.0, 0.0, 0.0, 0.5**0.5]])
    expected = torch.sigmoid(100 * (cos[:, 0::2] - cos[:, 1::2]))  # softmax of a pair = sigmoid of the difference
    torch.testing.assert_close(clip_iqa_probabilities(image, text), expected)


def test_the_metric_is_clip_on_the_processed_crop(tiny_clip):
    from transformers import CLIPModel, CLIPProcessor

    model, processor = CLIPModel.from_pretrained(tiny_clip), CLIPProcessor.from_pretrained(tiny_clip)
    photo = _photo(0)
    inputs = processor(text=["Good photo.", "Bad photo."], images=photo[4:-4, 4:-4], return_tensors="pt",
                       padding=True)
    with torch.no_grad():
        logits = model(**inputs).logits_per_image[0]  # the model's own scale, exp(logit_scale) ≈ 14.3 here
    cosine = logits / model.logit_scale.exp()
    expected = torch.softmax(100 * cosine, dim=0)[0].item()

    score = clip_iqa_metric(str(tiny_clip))
    assert score(photo, 4) == pytest.approx(expected, abs=1e-5)
    assert score(photo, 0) != pytest.approx(expected, abs=1e-5)  # the crop is applied
    swapped = clip_iqa_metric(str(tiny_clip), prompts=("Bad photo.", "Good photo."))
    assert swapped(photo, 4) == pytest.approx(1 - expected, abs=1e-5)


def test_iter_sr_eval_adds_a_clipiqa_column(tiny_clip, tmp_path):
    pred = tmp_path / "pred"
    pred.mkdir()
    for i in range(2):
        PIL.Image.fromarray(_photo(i)).save(pred / f"{i}.png")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = iter_sr_eval(["--pred", str(pred), "--clipiqa", str(tiny_clip), "--no_niqe",
                             "--json", str(tmp_path / "s.json"), "--markdown", str(tmp_path / "s.md")])
    assert code == 0
    assert "CLIP-IQA" in stdout.getvalue()
    scores = json.loads((tmp_path / "s.json").read_text())
    per_image = [row["clipiqa"] for row in scores["images"]]
    score = clip_iqa_metric(str(tiny_clip))
    assert per_image == pytest.approx([score(_photo(i), 4) for i in range(2)], abs=1e-6)
    assert scores["mean"]["clipiqa"] == pytest.approx(np.mean(per_image))
    assert "CLIP-IQA ↑" in (tmp_path / "s.md").read_text()


def test_an_unloadable_clip_model_is_a_one_line_error(tmp_path, capsys):
    pred = tmp_path / "pred"
    pred.mkdir()
    PIL.Image.fromarray(_photo(0)).save(pred / "a.png")
    assert iter_sr_eval(["--pred", str(pred), "--clipiqa", str(tmp_path / "no-such-model")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("iter-sr-eval: error: CLIP-IQA unavailable"), err
