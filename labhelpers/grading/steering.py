"""Checks for the exercises of notebook 06 (steering sweeps).

``steer`` is the body of a steering hook: add ``alpha * direction`` at chosen positions.
``rank_correlation`` is Spearman's rank correlation, the number that says whether a
dose-response curve rises with alpha; its cases have ties, so that ranks must be shared.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from labhelpers.grading.core import Mistake, check_function

__all__ = ["check_rank_correlation", "check_steer"]


# --- the steering hook's body ---------------------------------------------------------------


def _steer(act, direction, alpha, positions):
    out = act.clone()
    where = slice(1, None) if positions is None else positions
    out[:, where] += alpha * direction
    return out


def _steer_bos_too(act, direction, alpha, positions):
    out = act.clone()
    out[:, slice(None) if positions is None else positions] += alpha * direction
    return out


def _steer_everywhere(act, direction, alpha, positions):
    out = act.clone()
    out[:, 1:] += alpha * direction
    return out


def _steer_unit(act, direction, alpha, positions):
    return _steer(act, direction / direction.norm(), alpha, positions)


def _steer_subtract(act, direction, alpha, positions):
    return _steer(act, direction, -alpha, positions)


def _steer_batch_axis(act, direction, alpha, positions):
    out = act.clone()
    out[slice(1, None) if positions is None else positions] += alpha * direction
    return out


def _steer_never_bos(act, direction, alpha, positions):
    if positions is None:
        return _steer(act, direction, alpha, positions)
    return _steer(act, direction, alpha, [p for p in positions if p != 0])


def _steer_cases() -> list[tuple]:
    cases = []
    for seed, (batch, pos, d), alpha, positions in (
        (0, (2, 5, 4), 1.5, None),
        (1, (3, 6, 8), -2.0, [1, 3]),
        (2, (1, 4, 3), 0.5, [0, 2]),
        (3, (2, 7, 5), 3.0, None),
    ):
        g = torch.Generator().manual_seed(seed)
        act = torch.randn(batch, pos, d, generator=g)
        direction = 2 * torch.randn(d, generator=g)  # norm far from 1, so normalising shows
        cases.append((act, direction, alpha, positions))
    return cases


def check_steer(steer: Callable) -> None:
    """Check ``steer(act [batch, pos, d], direction [d], alpha, positions) -> [batch, pos, d]``."""
    __tracebackhide__ = True
    check_function(
        "steer",
        steer,
        _steer,
        _steer_cases(),
        mistakes=[
            Mistake(
                "steering position 0 (BOS) too",
                _steer_bos_too,
                "positions=None means every position but 0: the BOS activation is the same in "
                "every prompt and the SAEs never saw it.",
            ),
            Mistake(
                "ignoring the chosen positions",
                _steer_everywhere,
                "When positions is a list, add the push at those positions only.",
            ),
            Mistake(
                "normalising the direction",
                _steer_unit,
                "Add alpha * direction as given: its norm is part of the dose.",
            ),
            Mistake(
                "subtracting the push",
                _steer_subtract,
                "Steering adds alpha * direction; a negative alpha is what pushes the other way.",
            ),
            Mistake(
                "indexing the batch axis instead of the positions",
                _steer_batch_axis,
                "act is [batch, pos, d]: positions index the second axis, for every batch row.",
            ),
            Mistake(
                "leaving out position 0 from a given list",
                _steer_never_bos,
                "Only positions=None means 'all but 0'; a list names exactly the positions "
                "to steer, 0 included when it is listed.",
            ),
        ],
        atol=1e-5,
    )


# --- Spearman's rank correlation ---------------------------------------------------------


def _ranks_with_ties(values: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(values))
    ranks[values.argsort(kind="stable")] = np.arange(len(values), dtype=float)
    for value in np.unique(values):
        ranks[values == value] = ranks[values == value].mean()
    return ranks


def _rank_correlation(x, y):
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    return float(np.corrcoef(_ranks_with_ties(x), _ranks_with_ties(y))[0, 1])


def _pearson(x, y):
    return float(np.corrcoef(np.asarray(x, dtype=float), np.asarray(y, dtype=float))[0, 1])


def _ranks_without_ties(x, y):
    def ranks(v):
        v = np.asarray(v, dtype=float)
        return v.argsort(kind="stable").argsort().astype(float)

    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def _argsort_once(x, y):
    def ranks(v):
        return np.asarray(v, dtype=float).argsort(kind="stable").astype(float)

    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def _rank_formula(x, y):
    rx = _ranks_with_ties(np.asarray(x, dtype=float))
    ry = _ranks_with_ties(np.asarray(y, dtype=float))
    n = len(rx)
    return float(1 - 6 * np.sum((rx - ry) ** 2) / (n * (n**2 - 1)))


def _lowest_rank_for_ties(x, y):
    def ranks(v):
        v = np.asarray(v, dtype=float)
        return np.searchsorted(np.sort(v), v).astype(float)

    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def _dense_ranks(x, y):
    def ranks(v):
        return np.unique(np.asarray(v, dtype=float), return_inverse=True)[1].astype(float)

    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def _rank_cases() -> list[tuple]:
    # dose-response shapes: flat at zero then rising (ties), saturating, and noisy
    return [
        ([-1.0, -0.5, 0.0, 0.5, 1.0], [0.0, 0.0, 0.1, 0.6, 0.9]),
        ([3.0, 1.0, 2.0, 5.0, 4.0, 0.0], [0.2, 0.0, 0.0, 1.0, 1.0, 0.0]),
        ([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [1.0, 4.0, 9.0, 16.0, 15.0, 36.0, 100.0]),
        ([1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.2, 0.9]),
    ]


def check_rank_correlation(rank_correlation: Callable) -> None:
    """Check ``rank_correlation(x, y) -> float``: Spearman's rho, ties given their mean rank."""
    __tracebackhide__ = True
    check_function(
        "rank_correlation",
        rank_correlation,
        _rank_correlation,
        _rank_cases(),
        mistakes=[
            Mistake(
                "a Pearson correlation of the values",
                _pearson,
                "Rank each list first, then correlate the ranks: a curve that rises steadily "
                "but flattens should still score 1.",
            ),
            Mistake(
                "ranks that break ties",
                _ranks_without_ties,
                "Equal values must share a rank, the mean of the ranks they span "
                "(two values tied for ranks 0 and 1 both get 0.5).",
            ),
            Mistake(
                "argsort taken for the ranks",
                _argsort_once,
                "argsort gives the order of the indices, not each value's rank; rank = the "
                "position of each value in the sorted list.",
            ),
            Mistake(
                "the 1 - 6 Σd² / (n(n² - 1)) shortcut",
                _rank_formula,
                "That shortcut equals Spearman's rho only when no values are tied; take the "
                "Pearson correlation of the ranks instead.",
            ),
            Mistake(
                "tied values given their lowest rank",
                _lowest_rank_for_ties,
                "Tied values share the *mean* of the ranks they span (ranks 0 and 1 tied: "
                "both 0.5), not the first of them.",
            ),
            Mistake(
                "dense ranks (np.unique's inverse)",
                _dense_ranks,
                "np.unique numbers the distinct values 0, 1, 2, ..., so a tie takes up one "
                "rank instead of all the ranks it spans; tied values share the mean of those.",
            ),
        ],
        atol=1e-6,
    )
