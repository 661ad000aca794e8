"""A transcoder: an SAE that reads an MLP's input and predicts the MLP's output.

An SAE on ``hook_mlp_out`` explains the MLP's *output* as a sparse sum of directions, but
why a latent fired is still hidden inside the MLP's neurons. A transcoder (Dunefsky et al.,
2024) replaces the MLP itself: a sparse, wide layer trained to imitate it,

    z     = TopK(x @ W_enc + b_enc)        x: the MLP's input  [..., d_model]
    y_hat = z @ W_dec + b_dec              y: the MLP's output [..., d_model]

so each latent is read from the residual stream by one linear map and writes one fixed
direction back. Between two transcoder layers, a latent's effect on a later latent's
pre-activation along the residual stream is the fixed weight ``W_dec[i] @ W_enc[:, j]``
(up to the LayerNorm scale): the input-independent edges that attribution graphs are
built from (Ameisen et al., 2025, use cross-layer transcoders that write to every later
layer).

Everything else is the TopK SAE's: the same parameters and shapes, AuxK for dead latents,
unit-norm decoder rows, the same trainer. The one difference is the training example: a
pair ``(x, y)`` stacked as ``[batch, 2, d_model]`` (see ``activations.harvest`` with two
hook names), and the loss compares the prediction with ``y`` instead of with ``x``.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from labhelpers.sae import SAEConfig, SAEOutput, TopKSAE

__all__ = ["Transcoder", "mlp_hooks"]


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
