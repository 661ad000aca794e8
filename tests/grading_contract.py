"""The contract every exercise check keeps, written once and reused by the grading tests.

A check must pass its own reference answer, say "not implemented yet" to a stub, and
name each known mistake when given a function that makes it. A test file describes its
checks in one dict and takes the three tests from ``contract_tests``::

    CHECKS = {check: (reference, [wrong_fn, ...], ["mistake name", ...])}
    test_passes_on_reference, test_stub_is_not_implemented, test_names_each_mistake = (
        contract_tests(CHECKS)
    )
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

Checks = dict[Callable, tuple[Callable, list[Callable], list[str]]]


def _stub(*args):
    raise NotImplementedError


def _name(value) -> str:
    return value.__name__ if callable(value) else str(value)


def contract_tests(checks: Checks) -> tuple[Callable, Callable, Callable]:
    """The three contract tests for ``checks``, parametrized over its checks and mistakes."""

    @pytest.mark.parametrize("check", list(checks), ids=_name)
    def test_passes_on_reference(check, capsys):
        check(checks[check][0])
        assert "passed" in capsys.readouterr().out

    @pytest.mark.parametrize("check", list(checks), ids=_name)
    def test_stub_is_not_implemented(check):
        with pytest.raises(AssertionError, match="not implemented yet"):
            check(_stub)

    @pytest.mark.parametrize(
        ("check", "index"), [(c, i) for c in checks for i in range(len(checks[c][1]))], ids=_name
    )
    def test_names_each_mistake(check, index):
        _, wrong_fns, names = checks[check]
        with pytest.raises(AssertionError) as error:
            check(wrong_fns[index])
        assert names[index] in str(error.value)

    return test_passes_on_reference, test_stub_is_not_implemented, test_names_each_mistake
