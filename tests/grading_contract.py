"""The contract every exercise check keeps, written once and reused by the grading tests.

A check must pass its own reference answer, say "not implemented yet" to a stub, and
name each known mistake when given a function that makes it. A test file describes its
checks in one dict and takes the three tests from ``contract_tests``::

    CHECKS = {check: (reference, [wrong_fn, ...], ["mistake name", ...])}
    test_passes_on_reference, test_stub_is_not_implemented, test_names_each_mistake = (
        contract_tests(CHECKS)
    )

Where a check has several right answers (written different ways), the reference slot may
be a list of them: ``{check: ([reference, other_right_fn], [...], [...])}``; each must pass.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

Checks = dict[Callable, tuple[Callable | list[Callable], list[Callable], list[str]]]


def checks_from_pairs(
    references: dict[Callable, Callable | list[Callable]],
    mistakes: dict[Callable, list[tuple[str, Callable]]],
) -> Checks:
    """``CHECKS`` from references and mistakes kept as ``(name, wrong_fn)`` pairs, so each
    name can sit next to its wrong answer in the test file."""
    return {
        check: (reference, [fn for _, fn in mistakes[check]], [name for name, _ in mistakes[check]])
        for check, reference in references.items()
    }


def _stub(*args):
    raise NotImplementedError("exercise: replace this line with your code")  # as in the notebooks


def _name(value) -> str:
    return value.__name__ if callable(value) else str(value)


def contract_tests(checks: Checks) -> tuple[Callable, Callable, Callable]:
    """The three contract tests for ``checks``, parametrized over its checks and mistakes."""

    def right_answers(check):
        reference = checks[check][0]
        return reference if isinstance(reference, list) else [reference]

    @pytest.mark.parametrize(
        ("check", "right"), [(c, r) for c in checks for r in right_answers(c)], ids=_name
    )
    def test_passes_on_reference(check, right, capsys):
        check(right)
        out = capsys.readouterr().out
        # The pass line names the exercise, with or without the check_ prefix.
        assert out.startswith("✓ ") and f"{check.__name__.removeprefix('check_')} passed" in out

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
        assert f"looks like {names[index]}" in str(error.value)

    return test_passes_on_reference, test_stub_is_not_implemented, test_names_each_mistake
