"""Checks for the exercises of notebook 05 (reading features).

Both exercises return plain numbers, so each check turns the learner's answer into an
array first: a list of tuples and a tuple of floats then compare with a tolerance.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from labhelpers.grading.core import Mistake, check_function

__all__ = ["check_precision_recall", "check_top_k_examples"]


def _as_array(fn: Callable) -> Callable:
    """Call ``fn`` and return its answer as a float array (a list of tuples becomes [k, 3]).

    An answer that is not numbers (a dict, tuples of different lengths) comes back as it
    is, so that the check reports what it got instead of blaming the learner's function
    for the conversion's error.
    """

    def wrapped(*args):
        answer = fn(*args)
        if answer is None:
            return None
        try:
            return np.asarray(answer, dtype=float)
        except (TypeError, ValueError):
            return answer

    return wrapped


# --- top-k examples ---------------------------------------------------------------------------


def _acts(n_rows: int, context: int, seed: int, density: float = 0.3) -> torch.Tensor:
    """Sparse non-negative activations ``[n_rows, context]`` with distinct values."""
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(n_rows, context, generator=g) * 5
    return values * (torch.rand(n_rows, context, generator=g) < density)


def _top_k(acts: torch.Tensor, k: int) -> list[tuple[int, int, float]]:
    flat = acts.reshape(-1)
    k = min(k, int((flat > 0).sum()))  # never report a token where the feature is silent
    values, indices = flat.topk(k)
    context = acts.shape[1]
    return [(int(i) // context, int(i) % context, float(v)) for v, i in zip(values, indices)]


def _top_k_weakest(acts, k):
    flat = acts.reshape(-1)
    firing = torch.nonzero(flat > 0).squeeze(-1)
    order = firing[flat[firing].argsort()][:k]
    context = acts.shape[1]
    return [(int(i) // context, int(i) % context, float(flat[i])) for i in order]


def _top_k_divmod_rows(acts, k):
    flat = acts.reshape(-1)
    k = min(k, int((flat > 0).sum()))
    values, indices = flat.topk(k)
    n_rows = acts.shape[0]
    return [(int(i) % n_rows, int(i) // n_rows, float(v)) for v, i in zip(values, indices)]


def _top_k_position_first(acts, k):
    return [(position, row, value) for row, position, value in _top_k(acts, k)]


def _top_k_with_zeros(acts, k):
    values, indices = acts.reshape(-1).topk(k)
    context = acts.shape[1]
    return [(int(i) // context, int(i) % context, float(v)) for v, i in zip(values, indices)]


def _top_k_per_row(acts, k):
    best, position = acts.max(1)
    values, rows = best.topk(min(k, int((best > 0).sum())))
    return [(int(r), int(position[r]), float(v)) for v, r in zip(values, rows)]


def check_top_k_examples(top_k_examples: Callable) -> None:
    """Check ``top_k_examples(acts [n_rows, context], k) -> [(row, position, activation), ...]``."""
    __tracebackhide__ = True
    cases = [
        (_acts(3, 5, seed=0, density=0.8), 4),  # several maxima in one row
        (_acts(7, 4, seed=1), 6),  # more rows than positions
        (_acts(4, 9, seed=2, density=0.1), 10),  # fewer firing tokens than k
        (_acts(12, 16, seed=3), 8),
    ]
    check_function(
        "top_k_examples",
        _as_array(top_k_examples),
        _as_array(_top_k),
        cases,
        mistakes=[
            Mistake(
                "returning the weakest activations",
                _as_array(_top_k_weakest),
                "Sort strongest first: `flat.topk(k)` or `argsort(descending=True)`.",
            ),
            Mistake(
                "unflattening with the number of rows",
                _as_array(_top_k_divmod_rows),
                "A flat index i of a [n_rows, context] tensor is row i // context, "
                "position i % context.",
            ),
            Mistake(
                "(position, row) instead of (row, position)",
                _as_array(_top_k_position_first),
                "Each tuple is (row, position, activation): the row comes first.",
            ),
            Mistake(
                "including tokens where the feature does not fire",
                _as_array(_top_k_with_zeros),
                "Keep at most as many examples as there are activations above 0.",
            ),
            Mistake(
                "one example per row",
                _as_array(_top_k_per_row),
                "Rank every token of every row: one row may hold several of the top examples.",
            ),
        ],
    )


# --- precision and recall ---------------------------------------------------------------------


def _fires_labels(n: int, seed: int, p_fire: float, p_label: float) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < p_label
    # a detector that mostly agrees with the labels, with some misses and false alarms
    fires = np.where(rng.random(n) < 0.8, labels, rng.random(n) < p_fire)
    return fires, labels


def _precision_recall(fires: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    tp = float(np.sum(fires & labels))
    precision = tp / max(float(fires.sum()), 1.0)  # a detector that never fires: precision 0
    recall = tp / max(float(labels.sum()), 1.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f1


def _pr_swapped(fires, labels):
    precision, recall, f1 = _precision_recall(fires, labels)
    return recall, precision, f1


def _pr_over_all_tokens(fires, labels):
    tp = float(np.sum(fires & labels))
    precision, recall = tp / len(fires), tp / max(float(labels.sum()), 1.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f1


def _pr_silent_is_precise(fires, labels):
    if not fires.any():
        return 1.0, 0.0, 0.0
    return _precision_recall(fires, labels)


def _pr_agreements(fires, labels):
    tp = float(np.sum(fires == labels))
    precision, recall = tp / max(float(fires.sum()), 1.0), tp / max(float(labels.sum()), 1.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f1


def _pr_mean_f1(fires, labels):
    precision, recall, _ = _precision_recall(fires, labels)
    return precision, recall, (precision + recall) / 2


def _pr_accuracy(fires, labels):
    precision, recall, _ = _precision_recall(fires, labels)
    accuracy = float(np.mean(fires == labels))
    return precision, recall, accuracy


def check_precision_recall(precision_recall: Callable) -> None:
    """Check ``precision_recall(fires [n] bool, labels [n] bool) -> (precision, recall, f1)``."""
    __tracebackhide__ = True
    cases = [
        _fires_labels(50, seed=0, p_fire=0.3, p_label=0.2),
        _fires_labels(400, seed=1, p_fire=0.05, p_label=0.1),
        _fires_labels(1000, seed=2, p_fire=0.5, p_label=0.4),
        (np.zeros(20, bool), np.arange(20) % 4 == 0),  # a detector that never fires
    ]
    check_function(
        "precision_recall",
        _as_array(precision_recall),
        _as_array(_precision_recall),
        cases,
        mistakes=[
            Mistake(
                "precision and recall swapped",
                _as_array(_pr_swapped),
                "Precision divides by the tokens where the unit fires; recall by the "
                "tokens that carry the label.",
            ),
            Mistake(
                "dividing by all tokens",
                _as_array(_pr_over_all_tokens),
                "Precision is true positives over *fired* tokens, not over every token.",
            ),
            Mistake(
                "F1 as the arithmetic mean",
                _as_array(_pr_mean_f1),
                "F1 is the harmonic mean: 2 * p * r / (p + r).",
            ),
            Mistake(
                "accuracy in place of F1",
                _as_array(_pr_accuracy),
                "Accuracy rewards a unit that never fires on a rare concept; use F1.",
            ),
            Mistake(
                "precision 1 for a detector that never fires",
                _as_array(_pr_silent_is_precise),
                "Some libraries say 1 there, but this exercise asks for precision 0 when the "
                "unit never fires (and so F1 0).",
            ),
            Mistake(
                "true positives counted as agreements (fires == labels)",
                _as_array(_pr_agreements),
                "fires == labels also counts the tokens where neither is true; a true "
                "positive needs both: fires & labels.",
            ),
        ],
    )
