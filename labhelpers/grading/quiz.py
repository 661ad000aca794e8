"""The check for notebook 08's quiz: a list of letters instead of a function."""

from __future__ import annotations

from collections.abc import Sequence

from labhelpers import quiz
from labhelpers.grading.core import fail, passed

__all__ = ["check_quiz"]


def check_quiz(answers: Sequence[str | None]) -> None:
    """Pass at ``quiz.PASS_MARK`` or above, printing the explanation of every miss;
    below it, fail with the report."""
    __tracebackhide__ = True
    try:
        right = quiz.score(answers)
    except (TypeError, ValueError) as error:
        fail("quiz", str(error))
    if right < quiz.PASS_MARK:
        fail("quiz", quiz.report(answers))
    n = len(quiz.QUESTIONS)
    passed("quiz", f"{round(right * n)}/{n} right")
    if right < 1:
        print("\n".join(quiz.report(answers).splitlines()[1:]))
