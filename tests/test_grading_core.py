import re

import numpy as np
import pytest
import torch

from labhelpers.grading.core import Mistake, check_function, first_difference, to_numpy


def square(x):
    return x**2


def test_passing_check_prints_one_line(capsys):
    check_function("check_square", square, square, [(np.arange(3.0),), (np.ones((2, 2)),)])
    out = capsys.readouterr().out
    assert out == "✓ check_square passed (2 cases)\n"


def test_stub_says_not_implemented_without_chained_traceback():
    def stub(x):
        raise NotImplementedError("exercise: replace this line with your code")

    with pytest.raises(AssertionError, match="not implemented yet") as info:
        check_function("check_square", stub, square, [(np.arange(3.0),)])
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_known_mistake_is_named():
    mistakes = [Mistake("a cube instead of a square", lambda x: x**3, "Use ** 2.")]
    with pytest.raises(
        AssertionError, match=re.escape("looks like a cube instead of a square. Use ** 2.")
    ):
        check_function(
            "check_square", lambda x: x**3, square, [(np.arange(4.0),)], mistakes=mistakes
        )


def test_unknown_mistake_shows_expected_and_got():
    with pytest.raises(AssertionError) as info:
        check_function("check_square", lambda x: x + 1, square, [(np.arange(4.0),)])
    message = str(info.value)
    assert (
        "case 1 of 1" in message
        and "expected shape (4,)" in message
        and "got shape (4,)" in message
    )
    assert "0., 1., 4., 9." in message


def test_shape_mismatch_is_reported():
    with pytest.raises(AssertionError, match=r"expected shape \(2, 3\), got shape \(3, 2\)"):
        check_function("check_t", lambda x: x.T, lambda x: x, [(np.zeros((2, 3)),)])


def test_nan_output_is_reported():
    with pytest.raises(AssertionError, match="NaN or inf"):
        check_function("check_nan", lambda x: x * np.nan, lambda x: x, [(np.ones(3),)])


def test_crash_is_reported_briefly():
    with pytest.raises(AssertionError, match="your function raised ZeroDivisionError"):
        check_function("check_crash", lambda x: 1 / 0, square, [(np.ones(2),)])


def test_in_place_mutation_is_caught():
    def mutate(x):
        x += 1
        return x

    with pytest.raises(AssertionError, match="changed its input in place"):
        check_function("check_inc", mutate, lambda x: x + 1, [(np.ones(3),)])


def test_torch_outputs_and_nested_structures_compare():
    assert (
        first_difference((np.ones(2), {"a": 1.0}), (torch.ones(2), {"a": 1.0}), 1e-6, 1e-5) is None
    )
    assert "item 1" in first_difference((1.0, 2.0), (1.0, 3.0), 1e-6, 1e-5)
    assert "keys" in first_difference({"a": 1}, {"b": 1}, 1e-6, 1e-5)
    assert to_numpy(torch.tensor([1, 2])).dtype.kind == "i"


def test_a_missing_return_is_named():
    def forgot_return(x):
        x**2  # computed, never returned

    with pytest.raises(AssertionError, match="got None: does your function end with a `return`"):
        check_function("check_square", forgot_return, square, [(np.arange(3.0),)])


def test_values_differ_names_the_largest_difference():
    # the first entries agree, so the message must point at the entry that does not
    def last_wrong(x):
        y = x**2
        y[-1] = 0.0
        return y

    with pytest.raises(
        AssertionError, match=re.escape("largest difference at index 5: expected 25, got 0")
    ):
        check_function("check_square", last_wrong, square, [(np.arange(6.0),)])


def test_an_array_of_strings_is_reported_not_raised():
    with pytest.raises(AssertionError, match="expected numbers, got an array of <U"):
        check_function("check_square", lambda x: np.array(["a"] * 3), square, [(np.ones(3),)])


def test_a_list_argument_changed_in_place_is_caught():
    def sorts_its_input(values):
        values.sort()
        return sum(values)

    with pytest.raises(AssertionError, match="changed its input in place"):
        check_function("check_sum", sorts_its_input, sum, [([3.0, 1.0, 2.0],)])


def test_every_check_hides_its_own_frame_from_a_learners_traceback():
    # IPython and pytest skip frames that set __tracebackhide__, so a failing check shows the
    # learner the message, not the check's source (which lists every known mistake's hint)
    from labhelpers import grading

    checks = [getattr(grading, name) for name in dir(grading) if name.startswith("check_")]
    assert len(checks) >= 25
    unhidden = [f.__name__ for f in checks if "__tracebackhide__" not in f.__code__.co_varnames]
    assert unhidden == []
