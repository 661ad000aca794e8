"""Checks for the exercises of notebook 03 (torch SAEs).

Every case starts with a *square* one (d_in == d_sae) so that a transposed weight or a
norm over the wrong axis still runs, and the check can name the mistake instead of
reporting a shape error.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from labhelpers.grading.core import Mistake, check_function

__all__ = [
    "check_normalize_decoder_rows",
    "check_relu_sae_forward",
    "check_relu_sae_loss",
    "check_topk_activation",
]


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _weights(batch: int, d_in: int, d_sae: int, seed: int) -> tuple[torch.Tensor, ...]:
    """x, W_enc, b_enc, W_dec, b_dec with non-zero biases so that each one matters."""
    return (
        _randn(batch, d_in, seed=seed),
        _randn(d_in, d_sae, seed=seed + 1) / d_in**0.5,
        0.1 * _randn(d_sae, seed=seed + 2),
        _randn(d_sae, d_in, seed=seed + 3) / d_in**0.5,
        0.5 * _randn(d_in, seed=seed + 4),
    )


# --- ReLU SAE forward -----------------------------------------------------------------------


def _relu_forward(x, W_enc, b_enc, W_dec, b_dec):
    z = F.relu((x - b_dec) @ W_enc + b_enc)
    return z @ W_dec + b_dec, z


def _no_relu(x, W_enc, b_enc, W_dec, b_dec):
    z = (x - b_dec) @ W_enc + b_enc
    return z @ W_dec + b_dec, z


def _no_b_dec_in(x, W_enc, b_enc, W_dec, b_dec):
    z = F.relu(x @ W_enc + b_enc)
    return z @ W_dec + b_dec, z


def _enc_transposed(x, W_enc, b_enc, W_dec, b_dec):
    z = F.relu((x - b_dec) @ W_enc.T + b_enc)
    return z @ W_dec + b_dec, z


def _decode_with_W_enc(x, W_enc, b_enc, W_dec, b_dec):
    z = F.relu((x - b_dec) @ W_enc + b_enc)
    return z @ W_enc.T + b_dec, z


def _dec_transposed(x, W_enc, b_enc, W_dec, b_dec):
    z = F.relu((x - b_dec) @ W_enc + b_enc)
    return z @ W_dec.T + b_dec, z


def _no_b_dec_out(x, W_enc, b_enc, W_dec, b_dec):
    z = F.relu((x - b_dec) @ W_enc + b_enc)
    return z @ W_dec, z


def _outputs_swapped(x, W_enc, b_enc, W_dec, b_dec):
    x_hat, z = _relu_forward(x, W_enc, b_enc, W_dec, b_dec)
    return z, x_hat


def check_relu_sae_forward(relu_sae_forward: Callable) -> None:
    """Check ``relu_sae_forward(x, W_enc, b_enc, W_dec, b_dec) -> (x_hat, z)``."""
    __tracebackhide__ = True
    cases = [_weights(5, 6, 6, seed=0), _weights(7, 4, 10, seed=10), _weights(16, 8, 24, seed=20)]
    check_function(
        "relu_sae_forward",
        relu_sae_forward,
        _relu_forward,
        cases,
        mistakes=[
            Mistake(
                "a missing ReLU",
                _no_relu,
                "Latents must be non-negative: apply ReLU to the pre-activations.",
            ),
            Mistake(
                "forgetting to subtract b_dec",
                _no_b_dec_in,
                "Centre the input first: encode (x - b_dec), so that b_dec is the SAE's origin.",
            ),
            Mistake(
                "a transposed encoder",
                _enc_transposed,
                "W_enc has shape [d_in, d_sae]: x @ W_enc maps [batch, d_in] to [batch, d_sae].",
            ),
            Mistake(
                "decoding with W_enc.T",
                _decode_with_W_enc,
                "Decode with the decoder: z @ W_dec + b_dec (W_dec is [d_sae, d_in]).",
            ),
            Mistake(
                "a transposed decoder",
                _dec_transposed,
                "W_dec has shape [d_sae, d_in]: z @ W_dec maps [batch, d_sae] to [batch, d_in].",
            ),
            Mistake(
                "b_dec not added back after decoding",
                _no_b_dec_out,
                "The encoder subtracted b_dec, so the decoder adds it back to its output.",
            ),
            Mistake(
                "(z, x_hat) returned in the wrong order",
                _outputs_swapped,
                "Return (x_hat, z): the reconstruction first, then the latents.",
            ),
        ],
        atol=1e-5,
    )


# --- ReLU SAE loss -------------------------------------------------------------------------


def _loss_cases() -> list[tuple]:
    cases = []
    for seed, (batch, d_in, d_sae) in zip((0, 10, 20), ((5, 6, 6), (7, 4, 10), (16, 8, 24))):
        x, W_enc, b_enc, W_dec, b_dec = _weights(batch, d_in, d_sae, seed)
        x_hat, z = _relu_forward(x, W_enc, b_enc, W_dec, b_dec)
        cases.append(
            (
                x,
                x_hat,
                z,
                W_dec * (1 + torch.rand(d_sae, 1, generator=torch.Generator().manual_seed(seed))),
                0.3,
            )
        )
    return cases


def _relu_loss(x, x_hat, z, W_dec, l1_coeff):
    mse = (x_hat - x).pow(2).sum(-1).mean()
    return mse + l1_coeff * (z * W_dec.norm(dim=1)).sum(-1).mean()


def _loss_no_norms(x, x_hat, z, W_dec, l1_coeff):
    return (x_hat - x).pow(2).sum(-1).mean() + l1_coeff * z.sum(-1).mean()


def _loss_norm_axis(x, x_hat, z, W_dec, l1_coeff):
    return (x_hat - x).pow(2).sum(-1).mean() + l1_coeff * (z * W_dec.norm(dim=0)).sum(-1).mean()


def _loss_mse_mean(x, x_hat, z, W_dec, l1_coeff):
    return (x_hat - x).pow(2).mean() + l1_coeff * (z * W_dec.norm(dim=1)).sum(-1).mean()


def _loss_squared_norms(x, x_hat, z, W_dec, l1_coeff):
    return (x_hat - x).pow(2).sum(-1).mean() + l1_coeff * (z * W_dec.pow(2).sum(1)).sum(-1).mean()


def _loss_batch_sum(x, x_hat, z, W_dec, l1_coeff):
    return (x_hat - x).pow(2).sum(-1).sum() + l1_coeff * (z * W_dec.norm(dim=1)).sum()


def check_relu_sae_loss(relu_sae_loss: Callable) -> None:
    """Check ``relu_sae_loss(x, x_hat, z, W_dec, l1_coeff) -> scalar loss``."""
    __tracebackhide__ = True
    check_function(
        "relu_sae_loss",
        relu_sae_loss,
        _relu_loss,
        _loss_cases(),
        mistakes=[
            Mistake(
                "an L1 penalty without the decoder norms",
                _loss_no_norms,
                "Weight each |z_i| by ||W_dec[i]||, or the SAE shrinks z and grows W_dec to dodge the penalty.",
            ),
            Mistake(
                "decoder norms over the wrong axis",
                _loss_norm_axis,
                "A feature's direction is a row of W_dec [d_sae, d_in]: take the norm over dim=1.",
            ),
            Mistake(
                "squared decoder norms",
                _loss_squared_norms,
                "Weight by the norm ||W_dec[i]|| itself (the square root of the sum of squares).",
            ),
            Mistake(
                "an MSE averaged over d_in",
                _loss_mse_mean,
                "Sum the squared error over d_in, then average over the batch.",
            ),
            Mistake(
                "a loss summed over the batch",
                _loss_batch_sum,
                "Average over the batch (dim 0) so the loss does not grow with batch size.",
            ),
        ],
        atol=1e-4,
    )


# --- TopK activation -----------------------------------------------------------------------


def _topk(pre, k):
    values, indices = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, F.relu(values))


def _topk_wrong_dim(pre, k):
    values, indices = pre.topk(k, dim=0)
    return torch.zeros_like(pre).scatter(0, indices, F.relu(values))


def _topk_no_relu(pre, k):
    values, indices = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, values)


def _topk_smallest(pre, k):
    values, indices = pre.topk(k, dim=-1, largest=False)
    return torch.zeros_like(pre).scatter(-1, indices, F.relu(values))


def _topk_abs(pre, k):
    _, indices = pre.abs().topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, F.relu(pre.gather(-1, indices)))


def _topk_whole_batch(pre, k):
    values, indices = pre.reshape(-1).topk(k * len(pre))
    return torch.zeros(pre.numel()).scatter(0, indices, F.relu(values)).reshape(pre.shape)


def check_topk_activation(topk_activation: Callable) -> None:
    """Check ``topk_activation(pre, k) -> z``: the k largest per row, ReLU'd, zeros elsewhere."""
    __tracebackhide__ = True
    shifted = _randn(6, 9, seed=3) - 1.0  # most entries negative: ReLU matters among the k
    cases = [(_randn(6, 6, seed=1), 2), (shifted, 4), (_randn(12, 30, seed=5), 5)]
    check_function(
        "topk_activation",
        topk_activation,
        _topk,
        cases,
        mistakes=[
            Mistake(
                "top-k over the wrong dimension",
                _topk_wrong_dim,
                "Each input keeps its own k latents: take topk over the last dim (dim=-1), not the batch.",
            ),
            Mistake(
                "a missing ReLU",
                _topk_no_relu,
                "A kept pre-activation can be negative: ReLU the kept values.",
            ),
            Mistake("keeping the k smallest", _topk_smallest, "Keep the largest pre-activations."),
            Mistake(
                "ranking by |pre|",
                _topk_abs,
                "Rank by the signed pre-activation, not its absolute value.",
            ),
            Mistake(
                "the k * batch largest of the whole batch (BatchTopK)",
                _topk_whole_batch,
                "That is BatchTopK, later in this notebook; here each row keeps exactly its "
                "own k largest, whatever the other rows hold: topk along dim=-1.",
            ),
        ],
    )


# --- decoder-norm constraint -----------------------------------------------------------------


def _normalize_rows(W_dec):
    return W_dec / W_dec.norm(dim=1, keepdim=True)


def check_normalize_decoder_rows(normalize_decoder_rows: Callable) -> None:
    """Check ``normalize_decoder_rows(W_dec) -> W_dec`` with every row of unit norm."""
    __tracebackhide__ = True
    cases = [(_randn(6, 6, seed=7) * 3,), (_randn(10, 4, seed=8),), (_randn(32, 8, seed=9) * 0.1,)]
    check_function(
        "normalize_decoder_rows",
        lambda W: normalize_decoder_rows(W.clone()),
        _normalize_rows,
        cases,
        mistakes=[
            Mistake(
                "normalising columns instead of rows",
                lambda W: W / W.norm(dim=0, keepdim=True),
                "A feature's direction is a row of W_dec [d_sae, d_in]: norm over dim=1.",
            ),
            Mistake(
                "forgetting the decoder-norm constraint",
                lambda W: W,
                "Divide each row by its L2 norm so that every feature direction has length 1.",
            ),
            Mistake(
                "norms without keepdim=True",
                lambda W: W / W.norm(dim=1),
                "W_dec.norm(dim=1) has shape [d_sae]; dividing by it lines the norms up with "
                "the columns. Keep the dimension (keepdim=True) so each row is divided by its own norm.",
            ),
            Mistake(
                "dividing by the squared norm",
                lambda W: W / W.pow(2).sum(1, keepdim=True),
                "Divide by the norm itself (the square root of the sum of squares).",
            ),
        ],
        atol=1e-5,
    )
