"""Checks for the exercise of notebook 04 (a transcoder's fixed weights).

The first case is square (d_model == d_sae) so that a transposed encoder still runs and
the check can name it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from labhelpers.grading.core import Mistake, check_function

__all__ = ["check_direct_weights"]


def _case(n_up: int, d_model: int, d_sae: int, seed: int) -> tuple[torch.Tensor, ...]:
    """W_dec_up, W_enc, ln_weight; the rows of W_dec_up have non-zero means, so that
    forgetting LayerNorm's centring shows."""
    gen = torch.Generator().manual_seed(seed)
    W_dec_up = torch.randn(n_up, d_model, generator=gen) + torch.randn(n_up, 1, generator=gen)
    W_enc = torch.randn(d_model, d_sae, generator=gen) / d_model**0.5
    ln_weight = 0.5 + torch.rand(d_model, generator=gen)
    return W_dec_up, W_enc, ln_weight


def _direct_weights(W_dec_up, W_enc, ln_weight):
    centred = W_dec_up - W_dec_up.mean(-1, keepdim=True)
    return (centred * ln_weight) @ W_enc


def _no_centring(W_dec_up, W_enc, ln_weight):
    return (W_dec_up * ln_weight) @ W_enc


def _no_ln_weight(W_dec_up, W_enc, ln_weight):
    return (W_dec_up - W_dec_up.mean(-1, keepdim=True)) @ W_enc


def _centred_over_rows(W_dec_up, W_enc, ln_weight):
    return ((W_dec_up - W_dec_up.mean(0, keepdim=True)) * ln_weight) @ W_enc


def _enc_transposed(W_dec_up, W_enc, ln_weight):
    return ((W_dec_up - W_dec_up.mean(-1, keepdim=True)) * ln_weight) @ W_enc.T


def _centred_after_weight(W_dec_up, W_enc, ln_weight):
    weighted = W_dec_up * ln_weight
    return (weighted - weighted.mean(-1, keepdim=True)) @ W_enc


def _full_layer_norm(W_dec_up, W_enc, ln_weight):
    return F.layer_norm(W_dec_up, W_dec_up.shape[-1:], weight=ln_weight) @ W_enc


def check_direct_weights(direct_weights: Callable) -> None:
    """Check ``direct_weights(W_dec_up, W_enc, ln_weight) -> [n_up, d_sae]``."""
    __tracebackhide__ = True
    check_function(
        "direct_weights",
        direct_weights,
        _direct_weights,
        [_case(6, 6, 6, seed=0), _case(3, 8, 12, seed=1), _case(10, 16, 40, seed=2)],
        mistakes=[
            Mistake(
                "forgetting LayerNorm's centring",
                _no_centring,
                "LayerNorm subtracts each vector's mean over d_model before anything else: "
                "centre each row of W_dec_up.",
            ),
            Mistake(
                "leaving out LayerNorm's weight",
                _no_ln_weight,
                "After centring and dividing by its scale, LayerNorm multiplies by its weight "
                "[d_model]: multiply the centred rows by ln_weight.",
            ),
            Mistake(
                "centring after multiplying by ln_weight",
                _centred_after_weight,
                "LayerNorm centres first and applies its weight last: centre the rows of "
                "W_dec_up, then multiply by ln_weight.",
            ),
            Mistake(
                "each row divided by its own scale (a full LayerNorm of W_dec_up)",
                _full_layer_norm,
                "sigma is the scale of the token's whole residual vector, not of this "
                "direction, and it stays outside V: centre and weight the rows, do not divide them.",
            ),
            Mistake(
                "centring over the wrong axis",
                _centred_over_rows,
                "Centre each direction over its own d_model entries (dim=-1), not across directions.",
            ),
            Mistake(
                "a transposed encoder",
                _enc_transposed,
                "W_enc has shape [d_model, d_sae]: rows of [n_up, d_model] @ W_enc give [n_up, d_sae].",
            ),
        ],
        atol=1e-5,
    )
