"""Each notebook-06 check passes the reference, flags a stub, and names each mistake."""

import numpy as np
import pytest

from labhelpers import steering
from labhelpers.grading import steering as checks


def _stub(*args):
    raise NotImplementedError


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


@pytest.mark.parametrize("check", list(CHECKS), ids=lambda c: c.__name__)
def test_passes_on_reference(check, capsys):
    check(CHECKS[check][0])
    assert "passed" in capsys.readouterr().out


@pytest.mark.parametrize("check", list(CHECKS), ids=lambda c: c.__name__)
def test_stub_is_not_implemented(check):
    with pytest.raises(AssertionError, match="not implemented yet"):
        check(_stub)


@pytest.mark.parametrize(
    ("check", "index"),
    [(c, i) for c in CHECKS for i in range(len(CHECKS[c][1]))],
    ids=lambda v: v.__name__ if callable(v) else str(v),
)
def test_names_each_mistake(check, index):
    _, wrong_fns, names = CHECKS[check]
    with pytest.raises(AssertionError) as error:
        check(wrong_fns[index])
    assert names[index] in str(error.value)


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
