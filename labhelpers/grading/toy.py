"""Checks for the exercises of notebook 01 (toy models of superposition)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from labhelpers import toy
from labhelpers.grading.core import Mistake, check_function

__all__ = ["check_feature_dimensionality", "check_importance_weighted_loss", "check_toy_forward"]


def _rand(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def _batch(batch: int, n_instances: int, n_features: int, seed: int) -> torch.Tensor:
    probability = torch.full((n_instances,), 0.4)
    generator = torch.Generator().manual_seed(seed)
    return toy.generate_batch(batch, n_features, probability, generator)


# --- the forward pass -----------------------------------------------------------------------


def _forward_cases() -> list[tuple[torch.Tensor, ...]]:
    # One instance, 2 hidden dims, 3 features, small enough to work out by hand.
    W = torch.tensor([[[1.0, 0.0, -1.0], [0.0, 1.0, 0.5]]])
    b_final = torch.tensor([[0.1, -0.2, -0.3]])
    x = torch.tensor([[[1.0, 0.0, 0.0]], [[0.0, 0.5, 1.0]]])
    cases = [(W, b_final, x)]
    for seed, (n_instances, d_hidden, n_features) in enumerate([(3, 2, 5), (2, 4, 7)]):
        W = _rand(n_instances, d_hidden, n_features, seed=seed)
        b_final = _rand(n_instances, n_features, seed=seed + 10, scale=0.3)
        cases.append((W, b_final, _batch(6, n_instances, n_features, seed + 20)))
    return cases


def _forward_no_relu(W, b_final, x):
    return torch.einsum("ihf,bih->bif", W, torch.einsum("ihf,bif->bih", W, x)) + b_final


def _forward_no_bias(W, b_final, x):
    return toy.relu_output_forward(W, torch.zeros_like(b_final), x)


def _forward_bias_after_relu(W, b_final, x):
    return toy.relu_output_forward(W, torch.zeros_like(b_final), x) + b_final


def check_toy_forward(learner_fn: Callable[..., Any]) -> None:
    """Check ``forward(W, b_final, x) -> ReLU(W^T W x + b_final)``, batched over instances."""
    __tracebackhide__ = True
    check_function(
        "check_toy_forward",
        learner_fn,
        toy.relu_output_forward,
        _forward_cases(),
        mistakes=[
            Mistake(
                "the missing ReLU",
                _forward_no_relu,
                "Wrap the read-out in torch.relu: x' = ReLU(W^T h + b_final).",
            ),
            Mistake(
                "the missing bias",
                _forward_no_bias,
                "Add b_final before the ReLU.",
            ),
            Mistake(
                "the bias added after the ReLU",
                _forward_bias_after_relu,
                "The bias goes inside: ReLU(W^T h + b_final), not ReLU(W^T h) + b_final.",
            ),
            Mistake(
                "a ReLU on the hidden layer",
                toy.relu_hidden_forward,
                "This model's hidden layer is linear, h = W x; only the output has a ReLU.",
            ),
        ],
    )


# --- the importance-weighted loss -------------------------------------------------------------


def _loss_cases() -> list[tuple[torch.Tensor, ...]]:
    x = torch.tensor([[[1.0, 0.0]], [[0.5, 0.5]]])
    x_hat = torch.tensor([[[0.5, 0.0]], [[0.5, 1.5]]])
    cases = [(x_hat, x, torch.tensor([1.0, 0.5]))]
    for seed, n_instances in enumerate([3, 4]):
        x = _batch(8, n_instances, 5, seed)
        x_hat = (x + _rand(8, n_instances, 5, seed=seed + 30, scale=0.3)).clamp_min(0)
        importance = 0.8 ** torch.arange(5.0)
        if seed == 1:  # a different importance per instance: [n_instances, n_features]
            importance = torch.rand(n_instances, 5, generator=torch.Generator().manual_seed(7))
        cases.append((x_hat, x, importance))
    return cases


def check_importance_weighted_loss(learner_fn: Callable[..., Any]) -> None:
    """Check ``importance_weighted_loss(x_hat, x, importance) -> [n_instances]``."""
    __tracebackhide__ = True
    reference = toy.importance_weighted_loss
    check_function(
        "check_importance_weighted_loss",
        learner_fn,
        reference,
        _loss_cases(),
        mistakes=[
            Mistake(
                "the missing importance weights",
                lambda x_hat, x, importance: ((x - x_hat) ** 2).sum(-1).mean(0),
                "Multiply each feature's squared error by its importance before summing.",
            ),
            Mistake(
                "averaging over features instead of summing",
                lambda x_hat, x, importance: (importance * (x - x_hat) ** 2).mean(-1).mean(0),
                "Sum the weighted errors over features (dim -1); average only over the batch.",
            ),
            Mistake(
                "summing over the batch instead of averaging",
                lambda x_hat, x, importance: (importance * (x - x_hat) ** 2).sum(-1).sum(0),
                "Average over the batch (dim 0) so the loss does not grow with the batch size.",
            ),
            Mistake(
                "the absolute error instead of the squared error",
                lambda x_hat, x, importance: (importance * (x - x_hat).abs()).sum(-1).mean(0),
                "Square the error: importance * (x - x_hat) ** 2.",
            ),
            Mistake(
                "a single number instead of one loss per instance",
                lambda x_hat, x, importance: reference(x_hat, x, importance).sum(),
                "Keep the instance axis: return a tensor of shape [n_instances].",
            ),
        ],
    )


# --- feature dimensionality --------------------------------------------------------------------


def _dimensionality_cases() -> list[tuple[torch.Tensor]]:
    # Instance 0: an antipodal pair (1/2 each) and an orthogonal feature (1).
    # Instance 1: a dead feature (all-zero column) must give 0, not NaN.
    W = torch.tensor(
        [
            [[1.0, -1.0, 0.0], [0.0, 0.0, 1.0]],
            [[0.6, 0.0, 0.8], [0.8, 0.0, -0.6]],
        ]
    )
    cases = [(W,)]
    for seed, shape in enumerate([(3, 2, 5), (2, 4, 9)]):
        cases.append((_rand(*shape, seed=seed + 40),))
    return cases


def _dimensionality_unsquared(W):
    norms = W.norm(dim=1)
    unit = W / norms[:, None, :].clamp_min(1e-8)
    overlap = torch.einsum("ihf,ihg->ifg", unit, W).abs()
    return norms**2 / overlap.sum(-1).clamp_min(1e-8)


def _dimensionality_unnormalised(W):
    overlap = torch.einsum("ihf,ihg->ifg", W, W) ** 2
    return W.norm(dim=1) ** 2 / overlap.sum(-1).clamp_min(1e-8)


def _dimensionality_both_unit(W):
    unit = W / W.norm(dim=1)[:, None, :].clamp_min(1e-8)
    overlap = torch.einsum("ihf,ihg->ifg", unit, unit) ** 2
    return W.norm(dim=1) ** 2 / overlap.sum(-1).clamp_min(1e-8)


def _dimensionality_numerator_unsquared(W):
    return toy.feature_dimensionality(W) / W.norm(dim=1).clamp_min(1e-8)


def _dimensionality_without_self(W):
    norms = W.norm(dim=1)
    return norms**2 / toy.superposition(W).clamp_min(1e-8)


def _dimensionality_norms_clamped_only(W):
    norms = W.norm(dim=1)
    unit = W / norms[:, None, :].clamp_min(1e-8)
    overlap = torch.einsum("ihf,ihg->ifg", unit, W) ** 2
    return norms**2 / overlap.sum(-1)  # a dead feature: 0 / 0


def check_feature_dimensionality(learner_fn: Callable[..., Any]) -> None:
    """Check ``feature_dimensionality(W) -> [n_instances, n_features]``."""
    __tracebackhide__ = True
    check_function(
        "check_feature_dimensionality",
        learner_fn,
        toy.feature_dimensionality,
        _dimensionality_cases(),
        mistakes=[
            Mistake(
                "a NaN for the dead feature (only the norms clamped)",
                _dimensionality_norms_clamped_only,
                "A dead feature (an all-zero column) gives 0 / 0 twice: in W / norms and in "
                "the denominator, whose sum of squared projections is 0 too. Clamp both "
                "divisors (clamp_min(1e-8)), the norms and the denominator's sum.",
            ),
            Mistake(
                "unsquared overlaps",
                _dimensionality_unsquared,
                "The denominator sums the *squared* dot products (Ŵ_i · W_j)^2.",
            ),
            Mistake(
                "dot products of un-normalised columns",
                _dimensionality_unnormalised,
                "Normalise feature i's column first: Ŵ_i = W_i / ||W_i||, then dot it with W_j.",
            ),
            Mistake(
                "both columns normalised in the dot products",
                _dimensionality_both_unit,
                "Only feature i's column is normalised: the denominator uses Ŵ_i · W_j, so the "
                "other features keep their lengths.",
            ),
            Mistake(
                "an unsquared norm in the numerator",
                _dimensionality_numerator_unsquared,
                "The numerator is the *squared* norm ||W_i||^2.",
            ),
            Mistake(
                "leaving the feature itself out of the denominator",
                _dimensionality_without_self,
                "Sum over every j, j = i included: a feature alone in its direction has D = 1.",
            ),
            Mistake(
                "the wrong axis (hidden dimensions instead of features)",
                lambda W: toy.feature_dimensionality(W.transpose(1, 2)),
                "Features are the columns of W (dim 2); take norms and dot products over dim 1.",
            ),
            Mistake(
                "the whole model's dimensions per feature, d_hidden / ||W||_F^2",
                toy.dimensions_per_feature,
                "That is one number per instance; the exercise wants one number per feature.",
            ),
        ],
    )
