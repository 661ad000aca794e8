import pytest

from labhelpers import grading, quiz

KEY = [quiz.LETTERS[q.answer] for q in quiz.QUESTIONS]


def test_a_perfect_answer_passes_in_one_line(capsys):
    grading.check_quiz(KEY)
    assert capsys.readouterr().out == "✓ quiz passed (10/10 right)\n"


def test_a_pass_with_misses_explains_them(capsys):
    answers = [None, None, *KEY[2:]]
    grading.check_quiz(answers)
    out = capsys.readouterr().out
    assert out.startswith("✓ quiz passed (8/10 right)")
    assert "1. unanswered" in out and quiz.QUESTIONS[1].why in out


def test_below_the_pass_mark_fails_with_the_report():
    answers = [None, None, None, *KEY[3:]]  # 7/10
    with pytest.raises(AssertionError, match=r"quiz: 7/10 right \(70%\): not yet") as info:
        grading.check_quiz(answers)
    assert quiz.QUESTIONS[2].why in str(info.value)


def test_malformed_answers_fail_with_the_reason():
    with pytest.raises(AssertionError, match="quiz: 9 answers for 10 questions"):
        grading.check_quiz(KEY[:9])


def test_the_widget_or_none_gets_a_plain_reason():
    class Widget:
        def answers(self):
            return KEY

    with pytest.raises(AssertionError, match=r"q\.answers\(\), with \(\)"):
        grading.check_quiz(Widget())
    with pytest.raises(AssertionError, match=r"q\.answers\(\), with \(\)"):
        grading.check_quiz(Widget().answers)
    with pytest.raises(AssertionError, match=r"one letter per question.*\(got NoneType\)"):
        grading.check_quiz(None)


def test_a_numpy_array_of_letters_passes(capsys):
    import numpy as np

    grading.check_quiz(np.array(KEY))
    assert capsys.readouterr().out.startswith("✓ quiz passed (10/10 right)")


def test_no_answers_at_all_says_so_instead_of_grading():
    with pytest.raises(AssertionError, match="no answers yet: set my_answers"):
        grading.check_quiz([None] * len(quiz.QUESTIONS))
