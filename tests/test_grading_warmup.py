"""Every warm-up check passes on the reference, fails on a stub, and names each known mistake."""

import re

import numpy as np
import pytest

from labhelpers import grading
from labhelpers.grading import warmup

CHECKS = {
    "check_cosine": warmup.reference_cosine,
    "check_superpose": warmup.reference_superpose,
    "check_sae_objective": warmup.reference_sae_objective,
    "check_top_k_sparse": warmup.reference_top_k_sparse,
    "check_add_scaled_direction": warmup.reference_add_scaled_direction,
    "check_ablation_effect": warmup.reference_ablation_effect,
}

# One wrong implementation per named mistake, written independently of the Mistake objects.
MISTAKES = {
    "check_cosine": [
        ("the raw dot product", lambda a, b: float(a @ b)),
        ("a division by only one norm", lambda a, b: float(a @ b / np.sqrt(a @ a))),
        ("a division by squared norms", lambda a, b: float(a @ b / ((a @ a) * (b @ b)))),
    ],
    "check_superpose": [
        ("the directions summed without their coefficients", lambda D, c: D.sum(0)),
        ("a sum over the wrong axis", lambda D, c: (D * c[:, None]).sum(1)),
    ],
    "check_sae_objective": [
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
    "check_top_k_sparse": [
        ("the k *smallest* values kept", lambda v, k: np.where(v <= np.sort(v)[k - 1], v, 0.0)),
        ("only the kept values returned", lambda v, k: -np.sort(-v)[:k]),
        ("a selection by magnitude", lambda v, k: np.where(abs(v) >= np.sort(abs(v))[-k], v, 0.0)),
    ],
    "check_add_scaled_direction": [
        ("the direction subtracted", lambda v, d, s: v - s * d),
        ("the activation scaled instead of the direction", lambda v, d, s: v * s + d),
    ],
    "check_ablation_effect": [
        ("the effect with its sign reversed", lambda f, x, n: f(dict(x, **{n: 0.0})) - f(x)),
        ("the score after ablation instead of the change", lambda f, x, n: f(dict(x, **{n: 0.0}))),
    ],
}


@pytest.mark.parametrize("name", CHECKS)
def test_check_passes_on_reference(name, capsys):
    getattr(grading, name)(CHECKS[name])
    assert capsys.readouterr().out.startswith(f"✓ {name} passed")


@pytest.mark.parametrize("name", CHECKS)
def test_check_says_not_implemented_on_stub(name):
    def stub(*args):
        raise NotImplementedError("exercise: replace this line with your code")

    with pytest.raises(AssertionError, match="not implemented yet"):
        getattr(grading, name)(stub)


@pytest.mark.parametrize(
    ("name", "mistake", "wrong"), [(n, m, f) for n, ms in MISTAKES.items() for m, f in ms]
)
def test_check_names_each_known_mistake(name, mistake, wrong):
    with pytest.raises(AssertionError, match="looks like " + re.escape(mistake)):
        getattr(grading, name)(wrong)


def test_check_rejects_an_unknown_wrong_answer():
    with pytest.raises(AssertionError, match=re.escape("wrong answer on case 1")):
        grading.check_cosine(lambda a, b: 0.5)
