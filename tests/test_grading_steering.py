"""Each notebook-06 check passes the reference, flags a stub, and names each mistake."""

import numpy as np
import pytest
from grading_contract import contract_tests

from labhelpers import steering
from labhelpers.grading import steering as checks


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
        ],
        [
            "steering position 0 (BOS) too",
            "ignoring the chosen positions",
            "normalising the direction",
            "subtracting the push",
        ],
    ),
    checks.check_rank_correlation: (
        checks._rank_correlation,
        [checks._pearson, checks._ranks_without_ties, checks._argsort_once],
        [
            "a Pearson correlation of the values",
            "ranks that break ties",
            "argsort taken for the ranks",
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
