"""Checks for notebook 00's warm-up calculations, with the reference answers.

Each warm-up is a few lines of NumPy; the references below are written as plainly
as the learner's answer should be.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from labhelpers.grading.core import Mistake, check_function

__all__ = [
    "check_ablation_effect",
    "check_add_scaled_direction",
    "check_cosine",
    "check_sae_objective",
    "check_superpose",
    "check_top_k_sparse",
]


def _vectors(n: int, d: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Fixed pairs first (orthogonal, parallel, the notebook's own), then random ones."""
    fixed = [
        (np.array([1.0, 0.0]), np.array([0.8, 0.6])),
        (np.array([1.0, 0.0]), np.array([0.0, 3.0])),
        (np.array([2.0, 2.0]), np.array([-1.0, -1.0])),
    ]
    rng = np.random.default_rng(1)
    return fixed + [(rng.normal(size=d), rng.normal(size=d)) for _ in range(n)]


# --- cosine similarity -----------------------------------------------------------------


def reference_cosine(left: np.ndarray, right: np.ndarray) -> float:
    return float(np.dot(left, right) / (np.linalg.norm(left) * np.linalg.norm(right)))


def check_cosine(cosine: Callable[[np.ndarray, np.ndarray], float]) -> None:
    """Check ``cosine(left, right) -> float``."""
    __tracebackhide__ = True
    mistakes = [
        Mistake(
            "the raw dot product",
            lambda a, b: float(np.dot(a, b)),
            "Divide the dot product by the product of the two norms.",
        ),
        Mistake(
            "a division by only one norm",
            lambda a, b: float(np.dot(a, b) / np.linalg.norm(a)),
            "Divide by the norm of *both* vectors.",
        ),
        Mistake(
            "a division by only one norm",
            lambda a, b: float(np.dot(a, b) / np.linalg.norm(b)),
            "Divide by the norm of *both* vectors.",
        ),
        Mistake(
            "a division by squared norms",
            lambda a, b: float(np.dot(a, b) / (a @ a * (b @ b))),
            "Use the norms (square roots), not the squared norms.",
        ),
        Mistake(
            "the absolute value of the cosine",
            lambda a, b: abs(reference_cosine(a, b)),
            "Keep the sign: directions pointing opposite ways have a cosine of -1.",
        ),
    ]
    check_function("check_cosine", cosine, reference_cosine, _vectors(5, 6), mistakes=mistakes)


# --- superposition: several directions written into one activation ---------------------


def reference_superpose(directions: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    return coefficients @ directions


def check_superpose(superpose: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
    """Check ``superpose(directions [n, d], coefficients [n]) -> activation [d]``."""
    __tracebackhide__ = True
    rng = np.random.default_rng(2)
    cases = [(np.array([[1.0, 0.0], [0.8, 0.6]]), np.array([1.5, 1.0]))]
    cases += [(rng.normal(size=(n, d)), rng.normal(size=n)) for n, d in [(3, 2), (5, 4), (2, 7)]]
    mistakes = [
        Mistake(
            "the directions summed without their coefficients",
            lambda D, c: D.sum(axis=0),
            "Scale each direction by its coefficient before adding.",
        ),
        Mistake(
            "a sum over the wrong axis",
            lambda D, c: (c[:, None] * D).sum(axis=1),
            "Sum over the directions (axis 0), keeping the d model dimensions.",
        ),
        Mistake(
            "the matrix product in the wrong order (directions @ coefficients)",
            lambda D, c: D @ c,
            "directions is [n_features, d]: the product must pair each coefficient with a "
            "row and sum over n_features, leaving d numbers.",
        ),
    ]
    check_function("check_superpose", superpose, reference_superpose, cases, mistakes=mistakes)


# --- the SAE objective: reconstruction + L1 ---------------------------------------------


def reference_sae_objective(
    target: np.ndarray, reconstructed: np.ndarray, code: np.ndarray, sparsity_weight: float
) -> float:
    mse = np.mean((target - reconstructed) ** 2)
    return float(mse + sparsity_weight * np.abs(code).sum())


def check_sae_objective(sae_objective: Callable[..., float]) -> None:
    """Check ``sae_objective(target, reconstructed, code, sparsity_weight) -> float``."""
    __tracebackhide__ = True
    rng = np.random.default_rng(3)
    cases = [
        (np.array([1.0, 0.0]), np.array([0.75, 0.0]), np.array([0.75, 0.0]), 0.01),
        (np.array([1.0, 0.0]), np.array([1.0, 0.0]), np.array([0.75, 0.5]), 0.1),
    ]
    cases += [(rng.normal(size=4), rng.normal(size=4), rng.normal(size=6), 0.3) for _ in range(3)]
    mistakes = [
        Mistake(
            "an L2 penalty (squared code) instead of L1",
            lambda t, r, z, lam: float(np.mean((t - r) ** 2) + lam * np.sum(z**2)),
            "The sparsity term is the sum of absolute values |z|, not squares.",
        ),
        Mistake(
            "a summed (not mean) squared error",
            lambda t, r, z, lam: float(np.sum((t - r) ** 2) + lam * np.abs(z).sum()),
            "This exercise averages the squared error over the dimensions (np.mean); summing "
            "is the other common convention (notebook 03 uses it), not the one asked for here.",
        ),
        Mistake(
            "a penalty without the absolute value",
            lambda t, r, z, lam: float(np.mean((t - r) ** 2) + lam * np.sum(z)),
            "Take |z| so that negative codes are penalised too.",
        ),
        Mistake(
            "the sparsity weight left out",
            lambda t, r, z, lam: float(np.mean((t - r) ** 2) + np.abs(z).sum()),
            "Multiply the L1 term by sparsity_weight (lambda).",
        ),
        Mistake(
            "an averaged (not summed) L1 norm",
            lambda t, r, z, lam: float(np.mean((t - r) ** 2) + lam * np.abs(z).mean()),
            "The L1 norm adds up |z| over every entry of the code; only the squared error "
            "is averaged.",
        ),
        Mistake(
            "an absolute (not squared) reconstruction error",
            lambda t, r, z, lam: float(np.mean(np.abs(t - r)) + lam * np.abs(z).sum()),
            "Square the differences (target - reconstructed) before averaging them.",
        ),
    ]
    check_function(
        "check_sae_objective", sae_objective, reference_sae_objective, cases, mistakes=mistakes
    )


# --- TopK: keep the k largest entries ---------------------------------------------------


def reference_top_k_sparse(values: np.ndarray, k: int) -> np.ndarray:
    keep = np.argsort(-values, kind="stable")[:k]
    out = np.zeros_like(values)
    out[keep] = values[keep]
    return out


def check_top_k_sparse(top_k_sparse: Callable[[np.ndarray, int], np.ndarray]) -> None:
    """Check ``top_k_sparse(values [n], k) -> values with all but the k largest set to 0``."""
    __tracebackhide__ = True
    rng = np.random.default_rng(4)
    # k = 3 in the second case keeps a negative value, so a ReLU on the kept values shows.
    cases = [(np.array([0.1, 2.4, 0.3, 1.7, 0.05]), 2), (np.array([-3.0, 0.5, -0.2, 1.0]), 3)]
    cases += [(rng.normal(size=12), k) for k in (1, 3, 6)]

    def smallest(v: np.ndarray, k: int) -> np.ndarray:
        keep = np.argsort(v)[:k]
        out = np.zeros_like(v)
        out[keep] = v[keep]
        return out

    def by_magnitude(v: np.ndarray, k: int) -> np.ndarray:
        keep = np.argsort(-np.abs(v))[:k]
        out = np.zeros_like(v)
        out[keep] = v[keep]
        return out

    mistakes = [
        Mistake(
            "the k *smallest* values kept",
            smallest,
            "Sort in descending order (largest first) before taking k.",
        ),
        Mistake(
            "only the kept values returned",
            lambda v, k: np.sort(v)[::-1][:k],
            "Return a vector as long as the input, with zeros where a latent was dropped.",
        ),
        Mistake(
            "a selection by magnitude |v|",
            by_magnitude,
            "TopK keeps the largest *values* (pre-activations), not the largest magnitudes.",
        ),
        Mistake(
            "a ReLU on the kept values",
            lambda v, k: np.maximum(reference_top_k_sparse(v, k), 0.0),
            "This exercise keeps the k largest values as they are, negative ones included; "
            "the SAE's ReLU is a separate step.",
        ),
    ]
    check_function(
        "check_top_k_sparse", top_k_sparse, reference_top_k_sparse, cases, mistakes=mistakes
    )


# --- steering: add a scaled direction ---------------------------------------------------


def reference_add_scaled_direction(
    vector: np.ndarray, direction: np.ndarray, scale: float
) -> np.ndarray:
    return vector + scale * direction


def check_add_scaled_direction(add_scaled_direction: Callable[..., np.ndarray]) -> None:
    """Check ``add_scaled_direction(vector, direction, scale) -> vector + scale * direction``."""
    __tracebackhide__ = True
    rng = np.random.default_rng(5)
    cases = [(np.array([0.2, -0.1, 0.0, 0.4]), np.array([0.0, 0.5, 0.5, 0.0]), 2.0)]
    cases += [(rng.normal(size=5), rng.normal(size=5), s) for s in (-1.5, 0.0, 3.0)]
    mistakes = [
        Mistake(
            "the direction subtracted",
            lambda v, d, s: v - s * d,
            "Steering *adds* scale × direction; a negative scale subtracts.",
        ),
        Mistake(
            "the activation scaled instead of the direction",
            lambda v, d, s: s * v + d,
            "Multiply the direction by the scale, and leave the activation as it is.",
        ),
        Mistake(
            "a normalised direction",
            lambda v, d, s: v + s * d / np.linalg.norm(d),
            "Add the direction as given: its length is part of how hard you push.",
        ),
    ]
    check_function(
        "check_add_scaled_direction",
        add_scaled_direction,
        reference_add_scaled_direction,
        cases,
        mistakes=mistakes,
    )


# --- ablation: how much a score drops when one feature is zeroed -----------------------


def reference_ablation_effect(
    score: Callable[[Mapping[str, float]], float], features: Mapping[str, float], name: str
) -> float:
    return score(features) - score({**features, name: 0.0})


def check_ablation_effect(ablation_effect: Callable[..., float]) -> None:
    """Check ``ablation_effect(score, features, name) -> score(features) - score(features with name zeroed)``."""
    __tracebackhide__ = True
    weights = {"credential_safety": 1.2, "urgency": 0.1, "formatting": 0.0, "negation": -0.5}

    def score(features: Mapping[str, float]) -> float:
        # Like the notebook's score, it reads every feature, so a left-out one is an error.
        missing = [k for k in weights if k not in features]
        if missing:
            raise LookupError(
                f"score() needs every feature, but the dict it got has no {missing[0]!r}: "
                "set the ablated feature to 0.0 instead of leaving it out"
            )
        return sum(features[k] * w for k, w in weights.items())

    observed = {"credential_safety": 0.9, "urgency": 0.8, "formatting": 0.7, "negation": 0.4}
    cases = [(score, observed, name) for name in weights]
    mistakes = [
        Mistake(
            "the effect with its sign reversed",
            lambda s, f, n: s({**f, n: 0.0}) - s(f),
            "Report baseline minus ablated, so that removing a helpful feature gives a positive drop.",
        ),
        Mistake(
            "the score after ablation instead of the change",
            lambda s, f, n: s({**f, n: 0.0}),
            "Subtract the ablated score from the baseline score.",
        ),
    ]
    check_function(
        "check_ablation_effect",
        ablation_effect,
        reference_ablation_effect,
        cases,
        mistakes=mistakes,
    )
