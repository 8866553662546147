"""CLIP-IQA with a ViT CLIP through ``transformers``, as torchmetrics defines it.

CLIP-IQA (Wang, Chan and Loy, AAAI 2023) asks CLIP which of two antonym prompts, by default "Good photo." and
"Bad photo.", describes an image better: the cosine similarities of the image embedding with the two prompt
embeddings, times 100, go through a softmax over the pair, and the score is the probability of the positive prompt
(higher is better). This is torchmetrics' ``clip_image_quality_assessment`` with a Hugging Face CLIP
(``model_name_or_path="openai/clip-vit-base-patch16"`` and the like); the factor 100 is torchmetrics' fixed logit
scale, which is also exp(logit_scale) of the OpenAI CLIP models. It is not pyiqa's ``clipiqa``, which uses the
paper's ResNet-50 CLIP with learned prompts. Images go through the model's own ``CLIPProcessor`` (shorter side
resized to the model's input size, centre crop, CLIP normalisation).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .metrics import prepare_for_metric

DEFAULT_PROMPTS = ("Good photo.", "Bad photo.")
LOGIT_SCALE = 100.0


def clip_iqa_probabilities(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """Probability of the positive prompt of each pair, per image.

    Args:
        image_embeds (`torch.Tensor`): ``(N, D)`` CLIP image embeddings (normalised here).
        text_embeds (`torch.Tensor`): ``(2P, D)`` CLIP text embeddings of P prompt pairs, positive then negative.

    Returns:
        `torch.Tensor`: ``(N, P)`` probabilities in [0, 1].
    """
    similarity = F.normalize(image_embeds.float(), dim=-1) @ F.normalize(text_embeds.float(), dim=-1).T
    return (LOGIT_SCALE * similarity).unflatten(-1, (-1, 2)).softmax(dim=-1)[..., 0]


def clip_iqa_metric(model_id_or_path: str, prompts: tuple[str, str] = DEFAULT_PROMPTS):
    """CLIP-IQA as ``f(image_u8, crop_border) -> float`` for ``iter-sr-eval``.

    Args:
        model_id_or_path (`str`):
            A CLIP model on the Hub (e.g. ``openai/clip-vit-base-patch16``) or a local folder holding a
            ``CLIPModel`` and its ``CLIPProcessor`` (tokenizer and image processor).
        prompts (`tuple[str, str]`, defaults to `("Good photo.", "Bad photo.")`):
            The positive and negative prompt.

    Returns:
        A function of an ``H x W x 3`` uint8 image and the border to crop from each edge, returning the score.

    Raises:
        OSError: if the model or its processor cannot be loaded.
    """
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(model_id_or_path).eval()
    processor = CLIPProcessor.from_pretrained(model_id_or_path)
    text = processor(text=list(prompts), return_tensors="pt", padding=True)

    @torch.no_grad()
    def score(image: np.ndarray, crop_border: int = 0) -> float:
        cropped = prepare_for_metric(image, crop_border, test_y_channel=False).astype(np.uint8)
        pixels = processor(images=cropped, return_tensors="pt")["pixel_values"]
        output = model(input_ids=text["input_ids"], attention_mask=text["attention_mask"], pixel_values=pixels)
        return float(clip_iqa_probabilities(output.image_embeds, output.text_embeds)[0, 0])

    return score
