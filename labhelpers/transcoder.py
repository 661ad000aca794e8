"""A transcoder: an SAE that reads an MLP's input and predicts the MLP's output.

An SAE on ``hook_mlp_out`` explains the MLP's *output* as a sparse sum of directions, but
why a latent fired is still hidden inside the MLP's neurons. A transcoder (Dunefsky et al.,
2024) replaces the MLP itself: a sparse, wide layer trained to imitate it. Theirs are ReLU
SAEs with an L1 penalty; this course's are TopK, like its other SAEs:

    z     = TopK(x @ W_enc + b_enc)        x: the MLP's input  [..., d_model]
    y_hat = z @ W_dec + b_dec              y: the MLP's output [..., d_model]

so each latent is read from the residual stream by one linear map and writes one fixed
direction back. Along the direct residual path, an earlier latent's effect on a transcoder
latent's pre-activation is a fixed weight, ``W_dec[i] @ W_enc[:, j]`` after LayerNorm's
centring and weight (``direct_weights``), divided by the token's LayerNorm scale: the
edges that attribution graphs are built from, with that scale held fixed (Ameisen et al.,
2025, use cross-layer transcoders that write to every later layer). ``ablation_vs_direct``
measures how much of a real ablation's effect those weights predict once attention and
LayerNorm are free to respond.

Everything else is the TopK SAE's: the same parameters and shapes, AuxK for dead latents,
unit-norm decoder rows, the same trainer. Two things differ. The training example is a
pair ``(x, y)`` stacked as ``[batch, 2, d_model]`` (see ``activations.harvest`` with two
hook names), and the loss compares the prediction with ``y`` instead of with ``x``. And
``b_dec`` lives in the output space, so the encoder reads ``x`` itself, not ``x - b_dec``
(``apply_b_dec_to_input=False``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from labhelpers import circuits, splice
from labhelpers.sae import SAE, SAEConfig, SAEOutput, TopKSAE

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["Transcoder", "ablation_vs_direct", "direct_weights", "mlp_hooks"]


def mlp_hooks(layer: int) -> tuple[str, str]:
    """The hook points a transcoder for block ``layer``'s MLP reads and replaces.

    The MLP's input is LayerNorm 2's output, ``blocks.L.mlp.hook_in``; its output is
    ``blocks.L.hook_mlp_out``.
    """
    return f"blocks.{layer}.mlp.hook_in", f"blocks.{layer}.hook_mlp_out"


class Transcoder(TopKSAE):
    """A TopK transcoder: ``encode`` takes the MLP's input, ``decode`` gives its output."""

    architecture = "transcoder"

    def __init__(self, cfg: SAEConfig) -> None:
        # b_dec lives in the output space, so it is never subtracted from the input.
        super().__init__(replace(cfg, apply_b_dec_to_input=False))

    def split_batch(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[batch, 2, d_model]`` pairs -> (MLP inputs, MLP outputs), each ``[batch, d_model]``."""
        if batch.ndim != 3 or batch.shape[1] != 2:
            raise ValueError(
                "a transcoder trains on (MLP input, MLP output) pairs stacked as "
                f"[batch, 2, d_model]; got shape {tuple(batch.shape)}. Harvest both hooks "
                "at once: activations.collect(model, transcoder.mlp_hooks(layer), ...)."
            )
        return batch[:, 0], batch[:, 1]

    def forward(
        self,
        pairs: torch.Tensor,
        dead_mask: torch.Tensor | None = None,
        sparsity_scale: float = 1.0,
    ) -> SAEOutput:
        """pairs: ``[batch, 2, d_model]``. ``x_hat`` in the output is the predicted MLP output."""
        x, y = self.split_batch(pairs)
        pre = self.pre_acts(x)
        z = self.activation(pre)
        # The reconstruction target is y; AuxK, in _output, fits dead latents to y's residual.
        return self._output(y, self.decode(z), pre, z, dead_mask, sparsity_scale)


def direct_weights(
    W_dec_up: torch.Tensor, transcoder: Transcoder, ln_weight: torch.Tensor
) -> torch.Tensor:
    """The fixed weight from each upstream direction to each transcoder latent.

    W_dec_up: ``[n_up, d_model]``, directions written into the residual stream before the
    MLP's LayerNorm (rows of an earlier SAE's or transcoder's ``W_dec``); ln_weight:
    ``[d_model]``, that LayerNorm's weight. Returns ``[n_up, d_sae]``. LayerNorm centres
    its input, divides by its scale sigma and multiplies by its weight, so along the
    residual stream an upstream activation ``a_i`` moves latent j's pre-activation by
    ``a_i * weights[i, j] / sigma``, sigma being the token's LayerNorm scale.
    """
    centred = W_dec_up - W_dec_up.mean(-1, keepdim=True)
    return (centred * ln_weight) @ transcoder.W_enc


@torch.no_grad()
def ablation_vs_direct(
    model: TransformerBridge,
    sae: SAE,
    sae_hook: str,
    transcoder: Transcoder,
    layer: int,
    tokens: torch.Tensor,
    latents: Sequence[int],
    frozen: Sequence[str] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """How far fixed weights predict real effects, between an SAE and a later transcoder.

    For each upstream latent in ``latents`` (of ``sae``, read at ``sae_hook``, before block
    ``layer``'s MLP), zero-ablate it with the SAE's error term kept and record how the
    pre-activations of the transcoder latents active at each token change, at the tokens
    where it fired. The prediction is ``z_i * direct_weights / sigma``, sigma from the
    clean run. ``frozen``: hook names held at their clean values during the ablation
    (``blocks.L.hook_attn_out``: attention cannot respond; ``blocks.L.ln2.hook_scale``:
    neither can LayerNorm's scale). Returns (real, predicted), 1-D and aligned: one entry
    per (upstream latent, token, active transcoder latent).
    """
    in_hook, scale_hook = mlp_hooks(layer)[0], f"blocks.{layer}.ln2.hook_scale"
    tokens = tokens.to(model.cfg.device)
    _, cache = model.run_with_cache(tokens, names_filter=[sae_hook, in_hook, scale_hook, *frozen])
    z_up = sae.encode(cache[sae_hook][:, 1:])  # [batch, pos, n_up]
    sigma = cache[scale_hook][:, 1:]  # [batch, pos, 1]
    pre_clean = transcoder.pre_acts(cache[in_hook][:, 1:])  # [batch, pos, d_sae]
    active = transcoder.activation(pre_clean) > 0
    weights = direct_weights(sae.W_dec, transcoder, model.blocks[layer].ln2.w)
    hold = splice.hold_hooks(cache, list(frozen))
    seen: dict[str, torch.Tensor] = {}

    def record(act: torch.Tensor, hook: object = None) -> torch.Tensor:
        seen["x"] = act[:, 1:]
        return act

    real, predicted = [], []
    for i in latents:
        ablate = (sae_hook, circuits.ablation_hook(sae, [i]))
        splice.run_with_hooks(model, tokens, [ablate, *hold, (in_hook, record)])
        change = pre_clean - transcoder.pre_acts(seen["x"])
        where = (z_up[..., i] > 0)[..., None] & active
        real.append(change[where])
        predicted.append((z_up[..., i, None] * weights[i] / sigma).expand_as(change)[where])
    return torch.cat(real), torch.cat(predicted)
