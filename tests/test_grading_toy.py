"""Every toy-model check passes on a right answer, fails on a stub, and names each known mistake."""

import re

import pytest
import torch
from grading_contract import checks_from_pairs, contract_tests

from labhelpers import grading


def forward(W, b_final, x):
    h = torch.einsum("ihf,bif->bih", W, x)
    return torch.relu(torch.einsum("ihf,bih->bif", W, h) + b_final)


def loss(x_hat, x, importance):
    return (importance * (x - x_hat) ** 2).sum(-1).mean(0)


def dimensionality(W):
    norms = W.norm(dim=1)
    unit = W / norms[:, None, :].clamp_min(1e-8)
    overlap = torch.einsum("ihf,ihg->ifg", unit, W) ** 2
    return norms**2 / overlap.sum(-1).clamp_min(1e-8)


def _numpy_forward(W, b_final, x):
    """A right answer written another way (bmm, NumPy output) must pass too."""
    h = torch.bmm(x.transpose(0, 1), W.transpose(1, 2))  # [n_instances, batch, d_hidden]
    out = torch.relu(torch.bmm(h, W) + b_final[:, None, :])
    return out.transpose(0, 1).numpy()


def _dimensionality_loop(W):
    """Per-feature dimensionality written as a plain loop, not vectorised."""
    out = torch.zeros(W.shape[0], W.shape[2])
    for i in range(W.shape[0]):
        for f in range(W.shape[2]):
            w = W[i, :, f]
            if w.norm() > 0:
                out[i, f] = w.norm() ** 2 / ((w / w.norm()) @ W[i]).pow(2).sum()
    return out


# Every right answer, each written a different way, must pass.
RIGHT_ANSWERS = {
    grading.check_toy_forward: [forward, _numpy_forward],
    grading.check_importance_weighted_loss: [loss],
    grading.check_feature_dimensionality: [dimensionality, _dimensionality_loop],
}


def _linear(W, b, x):
    return torch.einsum("ihf,bih->bif", W, torch.einsum("ihf,bif->bih", W, x)) + b


def _dimensionality_power(W, power):
    norms = W.norm(dim=1)
    unit = W / norms[:, None, :].clamp_min(1e-8)
    overlap = torch.einsum("ihf,ihg->ifg", unit, W).abs() ** power
    return norms**2 / overlap.sum(-1).clamp_min(1e-8)


def _dimensionality_raw_dots(W):
    gram = torch.einsum("ihf,ihg->ifg", W, W)
    return W.norm(dim=1) ** 2 / (gram**2).sum(-1).clamp_min(1e-8)


def _without_self(W):
    norms = W.norm(dim=1)
    unit = W / norms[:, None, :].clamp_min(1e-8)
    overlap = torch.einsum("ihf,ihg->ifg", unit, W) ** 2
    others = overlap.sum(-1) - overlap.diagonal(dim1=1, dim2=2)
    return norms**2 / others.clamp_min(1e-8)


def _cosines_squared(W):
    unit = W / W.norm(dim=1, keepdim=True).clamp_min(1e-8)
    cosines = torch.einsum("ihf,ihg->ifg", unit, unit)
    return W.norm(dim=1) ** 2 / (cosines**2).sum(-1).clamp_min(1e-8)


# One wrong implementation per named mistake, written independently of the Mistake objects.
MISTAKES = {
    grading.check_toy_forward: [
        ("the missing ReLU", lambda W, b, x: _linear(W, b, x)),
        ("the missing bias", lambda W, b, x: forward(W, torch.zeros_like(b), x)),
        ("the bias added after the ReLU", lambda W, b, x: forward(W, torch.zeros_like(b), x) + b),
        (
            "a ReLU on the hidden layer",
            lambda W, b, x: torch.relu(
                torch.einsum("ihf,bih->bif", W, torch.relu(torch.einsum("ihf,bif->bih", W, x))) + b
            ),
        ),
    ],
    grading.check_importance_weighted_loss: [
        ("the missing importance weights", lambda xh, x, imp: ((x - xh) ** 2).sum(-1).mean(0)),
        (
            "averaging over features instead of summing",
            lambda xh, x, imp: (imp * (x - xh) ** 2).mean(dim=(0, 2)),
        ),
        (
            "summing over the batch instead of averaging",
            lambda xh, x, imp: (imp * (x - xh) ** 2).sum(dim=(0, 2)),
        ),
        (
            "the absolute error instead of the squared error",
            lambda xh, x, imp: (imp * (x - xh).abs()).sum(-1).mean(0),
        ),
        (
            "a single number instead of one loss per instance",
            lambda xh, x, imp: (imp * (x - xh) ** 2).sum() / x.shape[0],
        ),
    ],
    grading.check_feature_dimensionality: [
        ("unsquared overlaps", lambda W: _dimensionality_power(W, 1)),
        ("dot products of un-normalised columns", lambda W: _dimensionality_raw_dots(W)),
        ("leaving the feature itself out of the denominator", lambda W: _without_self(W)),
        ("both columns normalised in the dot products", lambda W: _cosines_squared(W)),
        (
            "an unsquared norm in the numerator",
            lambda W: dimensionality(W) / W.norm(dim=1).clamp_min(1e-8),
        ),
        (
            "the wrong axis (hidden dimensions instead of features)",
            lambda W: dimensionality(W.transpose(1, 2)),
        ),
        (
            "the whole model's dimensions per feature, d_hidden / ||W||_F^2",
            lambda W: W.shape[1] / W.pow(2).sum(dim=(1, 2)),
        ),
    ],
}


CHECKS = checks_from_pairs(RIGHT_ANSWERS, MISTAKES)

test_passes_on_reference, test_stub_is_not_implemented, test_names_each_mistake = contract_tests(
    CHECKS
)


def test_check_rejects_an_unknown_wrong_answer():
    with pytest.raises(AssertionError, match=re.escape("wrong answer on case 1")):
        grading.check_toy_forward(lambda W, b, x: torch.zeros_like(x) + 0.5)


def test_dead_feature_must_not_give_nan():
    def no_clamp(W):
        norms = W.norm(dim=1)
        overlap = torch.einsum("ihf,ihg->ifg", W / norms[:, None, :], W) ** 2
        return norms**2 / overlap.sum(-1)

    with pytest.raises(AssertionError, match="NaN"):
        grading.check_feature_dimensionality(no_clamp)


def test_clamping_only_the_norms_still_gets_the_zero_over_zero_hint():
    # the exercise's first instruction followed alone: the denominator's sum is 0 too
    def clamp_norms_only(W):
        norms = W.norm(dim=1).clamp_min(1e-8)
        overlap = torch.einsum("ihf,ihg->ifg", W / norms[:, None, :], W) ** 2
        return W.norm(dim=1) ** 2 / overlap.sum(-1)

    with pytest.raises(AssertionError, match="Clamp both divisors"):
        grading.check_feature_dimensionality(clamp_norms_only)


def test_more_right_answers_pass(capsys):
    """Gram-matrix and F.normalize versions, float64, and a nan_to_num guard all pass."""

    def forward_by_gram(W, b, x):
        gram = torch.einsum("ihf,ihg->ifg", W, W).double()
        return torch.relu(torch.einsum("ifg,big->bif", gram, x.double()) + b.double())

    def dimensionality_normalize(W):
        unit = torch.nn.functional.normalize(W, dim=1)
        overlap = torch.einsum("ihf,ihg->ifg", unit, W) ** 2
        return torch.nan_to_num(W.norm(dim=1) ** 2 / overlap.sum(-1))

    grading.check_toy_forward(forward_by_gram)
    grading.check_feature_dimensionality(dimensionality_normalize)
    assert capsys.readouterr().out.count("passed") == 2


def test_a_missing_return_is_named():
    def no_return(W, b, x):
        torch.relu(torch.einsum("ihf,bih->bif", W, torch.einsum("ihf,bif->bih", W, x)) + b)

    with pytest.raises(AssertionError, match="got None: does your function end with a `return`"):
        grading.check_toy_forward(no_return)
