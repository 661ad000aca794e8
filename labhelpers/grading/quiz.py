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
    if callable(getattr(answers, "answers", None)) or callable(answers):
        fail("quiz", "pass the letters, not the widget or its method: q.answers(), with ()")
    if isinstance(answers, str) or not hasattr(answers, "__len__"):
        fail(
            "quiz",
            f"answers must be a list with one letter per question, e.g. ['a', 'c'] "
            f"(got {type(answers).__name__})",
        )
    if len(answers) and all(a is None for a in answers):
        fail("quiz", "no answers yet: set my_answers (in JupyterLab, my_answers = q.answers())")
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
