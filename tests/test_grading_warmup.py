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
        ("a division by only one norm", lambda a, b: float(a @ b / np.sqrt(b @ b))),
        (
            "the absolute value of the cosine",
            lambda a, b: float(abs(a @ b) / np.sqrt((a @ a) * (b @ b))),
        ),
    ],
    grading.check_superpose: [
        ("the directions summed without their coefficients", lambda D, c: D.sum(0)),
        ("a sum over the wrong axis", lambda D, c: (D * c[:, None]).sum(1)),
        ("the matrix product in the wrong order", lambda D, c: np.dot(D, c)),
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
        (
            "an averaged (not summed) L1 norm",
            lambda t, r, z, lam: float(((t - r) ** 2).mean() + lam * abs(z).sum() / len(z)),
        ),
        (
            "an absolute (not squared) reconstruction error",
            lambda t, r, z, lam: float(abs(t - r).mean() + lam * abs(z).sum()),
        ),
    ],
    grading.check_top_k_sparse: [
        ("the k *smallest* values kept", lambda v, k: np.where(v <= np.sort(v)[k - 1], v, 0.0)),
        ("only the kept values returned", lambda v, k: -np.sort(-v)[:k]),
        ("a selection by magnitude", lambda v, k: np.where(abs(v) >= np.sort(abs(v))[-k], v, 0.0)),
        # the course's TopK SAE applies a ReLU; this warm-up does not
        ("a ReLU on the kept values", lambda v, k: np.where(v >= np.sort(v)[-k], v, 0.0).clip(0)),
    ],
    grading.check_add_scaled_direction: [
        ("the direction subtracted", lambda v, d, s: v - s * d),
        ("the activation scaled instead of the direction", lambda v, d, s: v * s + d),
        ("a normalised direction", lambda v, d, s: v + s * d / np.sqrt(d @ d)),
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


def test_valid_variants_pass(capsys):
    """Right answers written other ways: float32, a torch cosine, argpartition, einsum."""
    import torch

    grading.check_cosine(
        lambda a, b: torch.nn.functional.cosine_similarity(
            torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32), dim=0
        )
    )
    grading.check_superpose(lambda D, c: np.einsum("n,nd->d", c, D))

    def top_k_by_partition(v, k):
        keep = np.argpartition(-v, k - 1)[:k]
        out = np.zeros_like(v)
        out[keep] = v[keep]
        return out

    grading.check_top_k_sparse(top_k_by_partition)
    assert capsys.readouterr().out.count("passed") == 3


def test_an_ablation_that_leaves_the_feature_out_is_told_to_set_it_to_zero():
    # Leaving the key out gave the right number with a score that defaulted missing
    # features to 0, but the notebook's refusal_score reads every feature: a KeyError there.
    def without_the_feature(score, features, name):
        return score(features) - score({k: v for k, v in features.items() if k != name})

    with pytest.raises(AssertionError, match=re.escape("set the ablated feature to 0.0")):
        grading.check_ablation_effect(without_the_feature)


def test_an_ablation_that_zeroes_the_callers_dict_is_caught():
    def in_place(score, features, name):
        before = score(features)
        features[name] = 0.0
        return before - score(features)

    with pytest.raises(AssertionError, match="changed its input in place"):
        grading.check_ablation_effect(in_place)
