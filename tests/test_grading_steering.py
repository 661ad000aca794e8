"""Each notebook-06 check passes the reference, flags a stub, and names each mistake."""

import numpy as np
import pytest
from grading_contract import contract_tests

from labhelpers import steering
from labhelpers.grading import steering as checks


def _steer_rows(act, direction, alpha, where):
    out = act.clone()
    out[where] = out[where] + alpha * direction
    return out


def _ranks(values, method):
    """Ranks from 0, ties given the mean of the ranks they span ("mean"), the lowest of
    them ("min"), or numbered densely, one rank per distinct value ("dense")."""
    values = list(values)
    ordered = sorted(values)
    if method == "dense":
        return [float(sorted(set(values)).index(v)) for v in values]
    if method == "min":
        return [float(ordered.index(v)) for v in values]
    return [float(np.mean([i for i, u in enumerate(ordered) if u == v])) for v in values]


def _correlate_ranks(x, y, method):
    return float(np.corrcoef(_ranks(x, method), _ranks(y, method))[0, 1])


def _spearman_shortcut(x, y):
    rx, ry = _ranks(x, "mean"), _ranks(y, "mean")
    n = len(x)
    return 1 - 6 * sum((a - b) ** 2 for a, b in zip(rx, ry)) / (n * (n**2 - 1))


def _steer_in_place(act, direction, alpha, positions):
    act[:, 1:] += alpha * direction
    return act


CHECKS = {
    checks.check_steer: (
        checks._steer,
        [
            checks._steer_bos_too,
            checks._steer_everywhere,
            checks._steer_unit,
            checks._steer_subtract,
            lambda act, d, a, pos: _steer_rows(act, d, a, slice(1, None) if pos is None else pos),
            lambda act, d, a, pos: checks._steer(
                act, d, a, None if pos is None else [p for p in pos if p > 0]
            ),
        ],
        [
            "steering position 0 (BOS) too",
            "ignoring the chosen positions",
            "normalising the direction",
            "subtracting the push",
            "indexing the batch axis instead of the positions",
            "leaving out position 0 from a given list",
        ],
    ),
    checks.check_rank_correlation: (
        checks._rank_correlation,
        [
            checks._pearson,
            checks._ranks_without_ties,
            checks._argsort_once,
            _spearman_shortcut,
            lambda x, y: _correlate_ranks(x, y, "min"),
            lambda x, y: _correlate_ranks(x, y, "dense"),
        ],
        [
            "a Pearson correlation of the values",
            "ranks that break ties",
            "argsort taken for the ranks",
            "the 1 - 6 Σd² / (n(n² - 1)) shortcut",
            "tied values given their lowest rank",
            "dense ranks",
        ],
    ),
}


test_passes_on_reference, test_stub_is_not_implemented, test_names_each_mistake = contract_tests(
    CHECKS
)


def test_the_references_agree_with_the_library():
    """The checks grade against the same hook and the same Spearman the notebook uses."""
    for act, direction, alpha, positions in checks._steer_cases():
        expected = steering.steering_hook(direction, alpha, positions)(act)
        assert np.allclose(checks._steer(act, direction, alpha, positions), expected)
    for x, y in checks._rank_cases():
        assert checks._rank_correlation(x, y) == pytest.approx(steering.spearman(x, y))


def test_steering_in_place_is_caught():
    with pytest.raises(AssertionError, match="in place"):
        checks.check_steer(_steer_in_place)


def test_an_unknown_wrong_answer_shows_expected_and_got():
    with pytest.raises(AssertionError, match="wrong answer"):
        checks.check_rank_correlation(lambda x, y: 0.0)


def test_right_answers_written_other_ways_pass(capsys):
    """A mask, a loop and index_add for steer; searchsorted mean ranks from 1 for Spearman."""
    import torch

    def steer_mask(act, direction, alpha, positions):
        mask = torch.zeros(act.shape[1])
        mask[slice(1, None) if positions is None else positions] = 1.0
        return act + alpha * direction * mask[None, :, None]

    def steer_index_add(act, direction, alpha, positions):
        where = list(range(1, act.shape[1])) if positions is None else positions
        push = (alpha * direction).expand(act.shape[0], len(where), -1)
        return act.index_add(1, torch.tensor(where), push)

    def spearman_searchsorted(x, y):
        def ranks(v):
            v = np.asarray(v, dtype=float)
            s = np.sort(v)
            return (np.searchsorted(s, v, "left") + np.searchsorted(s, v, "right") + 1) / 2

        return float(np.corrcoef(ranks(x), ranks(y))[0, 1])

    checks.check_steer(steer_mask)
    checks.check_steer(steer_index_add)
    checks.check_rank_correlation(spearman_searchsorted)
    assert capsys.readouterr().out.count("passed") == 3


def test_sorting_the_callers_list_is_caught():
    def sorts_x(x, y):
        x.sort()
        return checks._rank_correlation(x, y)

    with pytest.raises(AssertionError, match="changed its input in place"):
        checks.check_rank_correlation(sorts_x)
