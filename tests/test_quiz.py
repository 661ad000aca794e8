import json
import re
from collections import Counter
from pathlib import Path

import pytest

from labhelpers import quiz

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
KEY = [quiz.LETTERS[q.answer] for q in quiz.QUESTIONS]


def wrong(question: quiz.Question) -> str:
    return quiz.LETTERS[(question.answer + 1) % len(question.options)]


def test_every_question_is_well_formed_and_points_to_a_notebook():
    assert len(quiz.QUESTIONS) == 10
    assert len({q.prompt for q in quiz.QUESTIONS}) == len(quiz.QUESTIONS)
    for q in quiz.QUESTIONS:
        assert 3 <= len(q.options) <= len(quiz.LETTERS)
        assert len(set(q.options)) == len(q.options)
        assert 0 <= q.answer < len(q.options)
        assert q.why.strip()
        assert (NOTEBOOKS / f"{q.notebook}.ipynb").exists(), q.notebook


def test_the_key_has_no_favourite_letter():
    counts = Counter(KEY)
    assert set(counts) == set(quiz.LETTERS)  # every letter is right somewhere
    assert max(counts.values()) <= 4  # "always answer b" cannot pass
    for letter in quiz.LETTERS:
        assert quiz.score([letter] * len(KEY)) < quiz.PASS_MARK


def test_the_right_option_is_not_given_away_by_its_length():
    lengths = [[len(o) for o in q.options] for q in quiz.QUESTIONS]
    longest = sum(row[q.answer] == max(row) for row, q in zip(lengths, quiz.QUESTIONS))
    shortest = sum(row[q.answer] == min(row) for row, q in zip(lengths, quiz.QUESTIONS))
    assert longest <= len(KEY) // 2 and shortest <= len(KEY) // 2  # "pick the longest" fails


def test_score_counts_right_answers_and_accepts_case_and_blanks():
    assert quiz.score(KEY) == 1.0
    assert quiz.score([wrong(q) for q in quiz.QUESTIONS]) == 0.0
    half = [k.upper() if i % 2 else None for i, k in enumerate(KEY)]
    assert quiz.score(half) == 0.5


def test_the_report_names_each_miss_with_its_answer_and_why():
    answers = list(KEY)
    answers[2] = wrong(quiz.QUESTIONS[2])
    answers[7] = None
    text = quiz.report(answers)
    assert text.startswith("8/10 right (80%): passed")
    assert f"3. you chose {answers[2]}" in text and "8. unanswered" in text
    assert quiz.QUESTIONS[2].why in text and quiz.QUESTIONS[2].notebook in text
    assert [line[:2] for line in text.splitlines() if line[0].isdigit()][1:] == ["3.", "8."]
    assert "not yet" in quiz.report([None] * len(KEY))


def test_grade_prints_the_report_and_returns_the_score(capsys):
    assert quiz.grade(KEY) == 1.0
    assert "10/10 right" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("answers", "error", "match"),
    [
        ("abcd", TypeError, "a list with one letter"),
        (["a"] * 3, ValueError, "3 answers for 10 questions"),
        (["e"] + ["a"] * 9, ValueError, "question 1: 'e' is not one of"),
        (["a"] * 9 + [2], ValueError, "question 10: 2 is not one of"),
    ],
)
def test_bad_answers_get_clear_errors(answers, error, match):
    with pytest.raises(error, match=match):
        quiz.score(answers)


def test_the_widget_scores_what_is_chosen():
    widget = quiz.Quiz()
    assert widget.answers() == [None] * len(KEY)  # nothing chosen to begin with
    for choice, letter in zip(widget.choices, KEY):
        choice.value = letter
    widget.choices[0].value = wrong(quiz.QUESTIONS[0])
    widget.button.click()
    assert "9/10 right" in widget.result.value
    assert widget.check() == 0.9
    bundle = widget._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert quiz.QUESTIONS[0].prompt.split(",")[0] in bundle["text/html"]  # the static copy


def test_show_prints_the_questions_outside_jupyter(capsys):
    assert quiz.show(static=True) is None
    out = capsys.readouterr().out
    assert out.startswith("1. ") and "   d) " in out
    assert isinstance(quiz.show(static=False), quiz.Quiz)


def test_show_decides_by_itself_and_prints_outside_a_kernel(capsys):
    assert quiz.show() is None  # pytest is no kernel: widgets.can_draw() is False
    assert capsys.readouterr().out == quiz.questions_text() + "\n"


def _outputs(notebook: str) -> str:
    """Every text output of a solution notebook, as committed, joined."""
    cells = json.loads((NOTEBOOKS / f"{notebook}.ipynb").read_text())["cells"]
    return "".join(
        "".join(out.get("text", "")) for cell in cells for out in cell.get("outputs", [])
    )


# (notebook, its output's figure, the explanation's figure): the quiz quotes measured numbers,
# so each must be the one the notebook printed, in the question that cites that notebook.
CITED = [
    ("04_sae_on_gpt2", r"\nfvu\s+(\d+\.\d+)", r"FVU (\d+\.\d+), CE-loss"),
    ("04_sae_on_gpt2", r"\nrecovered\s+(\d+\.\d+)", r"CE-loss recovered (\d+\.\d+)"),
    ("04_sae_on_gpt2", r"\nkl\s+(\d+\.\d+)", r"KL to the clean model (\d+\.\d+)"),
    (
        "05_interpreting_features",
        r"feature\s+214: top-20 say 'credential' \((\d+)%\)",
        r"(\d+)% cred",
    ),
    (
        "05_interpreting_features",
        r"feature\s+214: .*held-out (\d+\.\d+) of",
        r"\(precision (\d+\.\d+)\)",
    ),
    (
        "05_interpreting_features",
        r"feature\s+214: .*\(recall (\d+\.\d+)\)",
        r"\(recall (\d+\.\d+)\)",
    ),
]


@pytest.mark.parametrize("notebook, printed, quoted", CITED)
def test_the_figures_an_explanation_quotes_are_what_its_notebook_printed(notebook, printed, quoted):
    (why,) = [q.why for q in quiz.QUESTIONS if q.notebook == notebook and re.search(quoted, q.why)]
    measured = re.search(printed, _outputs(notebook))
    assert measured, f"{notebook} no longer prints {printed!r}"
    assert re.search(quoted, why).group(1) == measured.group(1)
