"""The token networks of ITER: the evaluator φ_e and the refinement (de-masking) network φ_r.

Both read two token maps: the map being judged or refined, and the condition S_l (E_l's tokens). The official
networks feed one-hot maps through bias-free 1×1 convolutions; a row lookup in an embedding table computes the
same thing without materialising K-channel one-hots. φ_r has one extra table row, the mask token (index K):

* the refined map is embedded as ``visible · E[token] + (1 − visible) · E[mask]`` (hidden positions become the
  mask token);
* the condition is embedded as ``E[S_l] + (1 − trusted) · E[mask]``: S_l stays visible everywhere, and the
  positions φ_e did not trust additionally carry the mask embedding, exactly as the official one-hot input
  ``cat(onehot(S_l), 1 − trusted)`` does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from .blocks import group_norm
from .outputs import ITERLogitsOutput
from .swin import SwinLayers


class ITERTokenTransformer(ModelMixin, ConfigMixin):
    r"""Swin transformer over a pair of token maps (shared implementation of φ_e and φ_r).

    Parameters:
        num_vq_embeddings (`int`, defaults to 512): codebook size K.
        out_channels (`int`, defaults to 2): 2 for φ_e (wrong / right), K for φ_r (a distribution over codes).
        use_mask_token (`bool`, defaults to `False`): whether the embedding table has the mask token row K (φ_r).
        hidden_dim (`int`, defaults to 256): width.
        swin_num_groups (`int`, defaults to 4): residual Swin groups.
        swin_depth (`int`, defaults to 6): Swin blocks per group.
        swin_num_heads (`int`, defaults to 8): attention heads.
        swin_window_size (`int`, defaults to 8): attention window side; token maps must have sides that are
            multiples of it.
        mlp_ratio (`float`, defaults to 4.0): Swin MLP width ratio.

    The defaults are the official φ_e's sizes.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["ResidualSwinGroup"]

    @register_to_config
    def __init__(
        self,
        num_vq_embeddings: int = 512,
        # what the network predicts: (wrong, right) per token for φ_e, a code per masked token for φ_r
        out_channels: int = 2, use_mask_token: bool = False,
        hidden_dim: int = 256,
        # the Swin trunk
        swin_num_groups: int = 4, swin_depth: int = 6, swin_num_heads: int = 8,
        swin_window_size: int = 8, mlp_ratio: float = 4.0,
    ):
        super().__init__()
        self.code_embedding = nn.Embedding(num_vq_embeddings + int(use_mask_token), hidden_dim)
        self.combine = nn.Linear(2 * hidden_dim, hidden_dim, bias=False)
        self.swin = SwinLayers(
            hidden_dim, hidden_dim, swin_num_groups, swin_depth, swin_num_heads, swin_window_size, mlp_ratio
        )
        self.norm_out = group_norm(hidden_dim)
        self.conv_out = nn.Conv2d(hidden_dim, out_channels, 1)

    @property
    def mask_token_id(self) -> int | None:
        return self.config.num_vq_embeddings if self.config.use_mask_token else None

    def _embed(self, tokens: torch.Tensor, weight: torch.Tensor | None, mask_weight: torch.Tensor | None):
        embedded = self.code_embedding(tokens)
        if weight is not None:
            embedded = embedded * weight.unsqueeze(-1).to(embedded.dtype)
        if mask_weight is not None:
            mask_vector = self.code_embedding.weight[self.mask_token_id]
            embedded = embedded + mask_weight.unsqueeze(-1).to(embedded.dtype) * mask_vector
        return embedded

    def forward(
        self,
        tokens: torch.Tensor,
        condition_tokens: torch.Tensor,
        visible_mask: torch.Tensor | None = None,
        trusted_mask: torch.Tensor | None = None,
        return_dict: bool = True,
    ):
        """Score or re-predict ``tokens`` (B, h, w) given ``condition_tokens`` S_l (B, h, w), both int64.

        ``visible_mask`` (B, h, w), 1 where ``tokens`` is kept and 0 where it is replaced by the mask token;
        ``trusted_mask`` (B, h, w), 1 where φ_e trusts S_l. Both need the mask token (φ_r); leave them None for φ_e.
        """
        if (visible_mask is not None or trusted_mask is not None) and self.mask_token_id is None:
            raise ValueError("visible_mask / trusted_mask need a network with a mask token (use_mask_token=True)")
        hidden_visible = None if visible_mask is None else 1 - visible_mask
        untrusted = None if trusted_mask is None else 1 - trusted_mask
        x = self._embed(tokens, visible_mask, hidden_visible)
        cond = self._embed(condition_tokens, None, untrusted)
        h = self.combine(torch.cat([x, cond], dim=-1)).permute(0, 3, 1, 2)
        h = self.swin(h.contiguous())
        logits = self.conv_out(F.silu(self.norm_out(h)))
        return ITERLogitsOutput(logits=logits) if return_dict else (logits,)


class ITERTokenEvaluator(ITERTokenTransformer):
    r"""φ_e, the token evaluation network: logits (B, 2, h, w) whose softmax[:, 1] is the probability that each
    token of the map is right, given S_l. Tokens with p ≥ α are kept."""


class ITERRefinementTransformer(ITERTokenTransformer):
    r"""φ_r, the refinement (de-masking) network: given S_l (with φ_e's untrusted positions flagged) and the
    current map with hidden positions set to the mask token, logits (B, K, h, w) over the codebook.

    Parameters: those of :class:`ITERTokenTransformer`, with its own defaults: ``out_channels`` (`int`, defaults
    to 512) must equal ``num_vq_embeddings`` (a distribution over the codes) and ``use_mask_token`` (`bool`,
    defaults to `True`) must be set.
    """

    @register_to_config
    def __init__(
        self,
        num_vq_embeddings: int = 512,
        out_channels: int = 512, use_mask_token: bool = True,  # a code for every masked token
        hidden_dim: int = 256,
        # the Swin trunk
        swin_num_groups: int = 4, swin_depth: int = 6, swin_num_heads: int = 8,
        swin_window_size: int = 8, mlp_ratio: float = 4.0,
    ):
        if out_channels != num_vq_embeddings or not use_mask_token:
            raise ValueError(
                f"φ_r predicts one of the K = {num_vq_embeddings} codes from masked maps: it needs out_channels = "
                f"{num_vq_embeddings} and use_mask_token=True, got out_channels={out_channels}, "
                f"use_mask_token={use_mask_token}"
            )
        super().__init__(
            num_vq_embeddings=num_vq_embeddings, out_channels=out_channels, use_mask_token=use_mask_token,
            hidden_dim=hidden_dim, swin_num_groups=swin_num_groups, swin_depth=swin_depth,
            swin_num_heads=swin_num_heads, swin_window_size=swin_window_size, mlp_ratio=mlp_ratio,
        )
