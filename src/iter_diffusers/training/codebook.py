"""Dead-code restarts for VQGAN training (an addition, not in the official recipe).

A codebook trained from the official near-zero initialisation with few steps collapses onto a handful of
entries (seen here: 19 of 512 codes used after 400 steps). Every ``every`` steps this re-initialises
the entries that no latent picked since the last restart with randomly chosen latents of the current batch, the
usual remedy (e.g. Dhariwal et al., Jukebox, 2020). It changes training only; the model is unchanged.
"""

from __future__ import annotations

import torch


class DeadCodeRestarter:
    """Watches a :class:`~iter_diffusers.models.vqgan.VectorQuantizer` in training mode and restarts unused codes.

    Args:
        quantizer (`VectorQuantizer`): the quantizer of the VQGAN being trained (a forward hook records its use).
        every (`int`): every this many steps, the codes no latent picked since the last restart are restarted.
        generator (`torch.Generator`, *optional*): draws the latents that replace them.
    """

    def __init__(self, quantizer, every: int, generator: torch.Generator | None = None):
        self.quantizer, self.every, self.generator = quantizer, every, generator
        self.usage = torch.zeros(quantizer.embedding.num_embeddings, dtype=torch.long)
        self.latents = None
        self.handle = quantizer.register_forward_hook(self._record)

    def _record(self, module, args, output):
        if module.training and torch.is_grad_enabled():
            indices = output[2][2]
            self.usage += torch.bincount(indices.flatten().cpu(), minlength=self.usage.numel())
            z = args[0].detach()
            self.latents = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])

    def state_dict(self) -> dict:
        """What a resumed run needs (accelerate's ``register_for_checkpointing``): the usage since the last restart
        and the generator's state. The latents are those of the current batch, recorded again every step."""
        state = {"usage": self.usage.clone()}
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.usage.copy_(state["usage"])
        if self.generator is not None and "generator" in state:
            self.generator.set_state(state["generator"])

    @torch.no_grad()
    def step(self, global_step: int, sync=None) -> int:
        """Call once per optimiser step; returns how many codes were restarted. ``sync`` (e.g. accelerate's
        ``broadcast``) makes every process use the main process's codebook."""
        if global_step % self.every or self.latents is None:
            return 0
        dead = (self.usage == 0).nonzero().flatten()
        weight = self.quantizer.embedding.weight
        if len(dead):
            choice = torch.randint(len(self.latents), (len(dead),), generator=self.generator)
            weight[dead.to(weight.device)] = self.latents[choice.to(self.latents.device)].to(weight.dtype)
        if sync is not None:
            weight.copy_(sync(weight.data))
        self.usage.zero_()
        return len(dead)
