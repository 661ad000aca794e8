"""Every warm-up check passes on the reference, fails on a stub, and names each known mistake."""

import re

import numpy as np
import pytest
from grading_contract import checks_from_pairs, contract_tests

from labhelpers import grading
from labhelpers.grading import warmup

REFERENCES = {
    grading.check_cosine: warmup.reference_cosine,
    grading.check_superpose: warmup.reference_superpose,
    grading.check_sae_objective: warmup.reference_sae_objective,
    grading.check_top_k_sparse: warmup.reference_top_k_sparse,
    grading.check_add_scaled_direction: warmup.reference_add_scaled_direction,
    grading.check_ablation_effect: warmup.reference_ablation_effect,
}

# One wrong implementation per named mistake, written independently of the Mistake objects.
MISTAKES = {
    grading.check_cosine: [
        ("the raw dot product", lambda a, b: float(a @ b)),
        ("a division by only one norm", lambda a, b: float(a @ b / np.sqrt(a @ a))),
        ("a division by squared norms", lambda a, b: float(a @ b / ((a @ a) * (b @ b)))),
    ],
    grading.check_superpose: [
        ("the directions summed without their coefficients", lambda D, c: D.sum(0)),
        ("a sum over the wrong axis", lambda D, c: (D * c[:, None]).sum(1)),
    ],
    grading.check_sae_objective: [
        ("an L2 penalty", lambda t, r, z, lam: float(((t - r) ** 2).mean() + lam * (z * z).sum())),
        (
            "a summed (not mean) squared error",
            lambda t, r, z, lam: float(((t - r) ** 2).sum() + lam * abs(z).sum()),
        ),
        (
            "a penalty without the absolute value",
            lambda t, r, z, lam: float(((t - r) ** 2).mean() + lam * z.sum()),
        ),
        (
            "the sparsity weight left out",
            lambda t, r, z, lam: float(((t - r) ** 2).mean() + abs(z).sum()),
        ),
    ],
    grading.check_top_k_sparse: [
        ("the k *smallest* values kept", lambda v, k: np.where(v <= np.sort(v)[k - 1], v, 0.0)),
        ("only the kept values returned", lambda v, k: -np.sort(-v)[:k]),
        ("a selection by magnitude", lambda v, k: np.where(abs(v) >= np.sort(abs(v))[-k], v, 0.0)),
    ],
    grading.check_add_scaled_direction: [
        ("the direction subtracted", lambda v, d, s: v - s * d),
        ("the activation scaled instead of the direction", lambda v, d, s: v * s + d),
    ],
    grading.check_ablation_effect: [
        ("the effect with its sign reversed", lambda f, x, n: f(dict(x, **{n: 0.0})) - f(x)),
        ("the score after ablation instead of the change", lambda f, x, n: f(dict(x, **{n: 0.0}))),
    ],
}


CHECKS = checks_from_pairs(REFERENCES, MISTAKES)

test_passes_on_reference, test_stub_is_not_implemented, test_names_each_mistake = contract_tests(
    CHECKS
)


def test_check_rejects_an_unknown_wrong_answer():
    with pytest.raises(AssertionError, match=re.escape("wrong answer on case 1")):
        grading.check_cosine(lambda a, b: 0.5)
