import csv

import grade_submissions
import nbformat

SETUP = "import numpy as np\nfrom labhelpers import grading"
RIGHT_COSINE = (
    "def cosine(left, right):\n"
    "    return float(np.dot(left, right) / (np.linalg.norm(left) * np.linalg.norm(right)))"
)
STUB_SUPERPOSE = (
    "def superpose(directions, coefficients):\n"
    '    raise NotImplementedError("exercise: replace this line with your code")'
)
SHORT_TOP_K = "def top_k_sparse(values, k):\n    return values  # forgot to zero the rest"


def submission(tmp_path, name, *sources):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


def test_each_check_is_graded_on_its_own(tmp_path):
    path = submission(
        tmp_path,
        "ada.ipynb",
        SETUP,
        RIGHT_COSINE,
        "grading.check_cosine(cosine)",
        STUB_SUPERPOSE,
        "grading.check_superpose(superpose)",
        SHORT_TOP_K,
        "grading.check_top_k_sparse(top_k_sparse)",
    )
    results = grade_submissions.grade_notebook(path, timeout=60)
    assert [(r.check, r.status) for r in results] == [
        ("cosine", "passed"),
        ("superpose", "failed"),
        ("top_k_sparse", "failed"),
    ]
    assert results[0].message.startswith("✓ check_cosine passed")
    assert "not implemented" in results[1].message.lower()
    assert results[2].message.startswith("AssertionError: check_top_k_sparse: wrong answer")
    assert grade_submissions.summary(results) == (
        f"{path}: 1/3 checks passed (not: superpose, top_k_sparse)"
    )


def test_a_dead_kernel_leaves_later_checks_not_run_and_stale_outputs_do_not_count(tmp_path):
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(SETUP),
            nbformat.v4.new_code_cell("import os\nos._exit(1)"),
            nbformat.v4.new_code_cell(RIGHT_COSINE),
            nbformat.v4.new_code_cell(
                "grading.check_cosine(cosine)",
                execution_count=9,  # an output saved by an earlier run of the student's
                outputs=[nbformat.v4.new_output("stream", text="✓ cosine passed\n")],
            ),
        ]
    )
    path = tmp_path / "bo.ipynb"
    nbformat.write(nb, path)
    (result,) = grade_submissions.grade_notebook(path, timeout=60)
    assert (result.check, result.status) == ("cosine", "not run")


def test_a_cell_that_runs_too_long_is_interrupted_and_grading_goes_on(tmp_path):
    endless = "import time\n\ndef cosine(left, right):\n    while True:\n        time.sleep(0.1)"
    check = "grading.check_cosine(cosine)"
    path = submission(tmp_path, "ed.ipynb", SETUP, endless, check, RIGHT_COSINE, check)
    first, second = grade_submissions.grade_notebook(path, timeout=3)
    assert (first.status, second.status) == ("failed", "passed")
    assert "KeyboardInterrupt" in first.message


def test_an_edited_check_cell_gets_no_credit(tmp_path):
    fake = 'print("✓ check_superpose passed")  # grading.check_superpose(superpose)'
    path = submission(tmp_path, "fy.ipynb", SETUP, STUB_SUPERPOSE, fake)
    (result,) = grade_submissions.grade_notebook(path, timeout=60)
    assert result.status == "edited"


def test_the_command_line_writes_one_csv_row_per_check_and_student(tmp_path, capsys):
    # the usual classroom layout: one folder per student, the same file name in each
    (tmp_path / "cy").mkdir(), (tmp_path / "di").mkdir()
    right = submission(
        tmp_path / "cy", "00.ipynb", SETUP, RIGHT_COSINE, "grading.check_cosine(cosine)"
    )
    stub = submission(
        tmp_path / "di", "00.ipynb", SETUP, STUB_SUPERPOSE, "grading.check_superpose(superpose)"
    )
    out = tmp_path / "grades.csv"
    args = [str(right), str(stub), "--csv", str(out), "--timeout", "60"]
    assert grade_submissions.main(args) == 0
    printed = capsys.readouterr().out
    assert f"{right}: 1/1 checks passed" in printed
    assert f"{stub}: 0/1 checks passed (not: superpose)" in printed
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["notebook"], r["check"], r["status"]) for r in rows] == [
        (str(right), "cosine", "passed"),
        (str(stub), "superpose", "failed"),
    ]


def test_a_one_line_edit_that_skips_the_check_gets_no_credit(tmp_path):
    # One line ending in ")": it passed the old pattern match and printed its own ✓.
    fake = 'grading.check_superpose(superpose) if False else print("✓ check_superpose passed")'
    path = submission(tmp_path, "gu.ipynb", SETUP, STUB_SUPERPOSE, fake)
    (result,) = grade_submissions.grade_notebook(path, timeout=60)
    assert result.status == "edited"
    assert grade_submissions.is_bare_check("grading.check_superpose(superpose)\n")
    assert not grade_submissions.is_bare_check("grading.check_superpose(superpose); x = 1")


def test_an_unreadable_submission_is_reported_and_the_class_is_still_graded(tmp_path, capsys):
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{not json", encoding="utf-8")
    missing = tmp_path / "missing.ipynb"
    right = submission(tmp_path, "ok.ipynb", SETUP, RIGHT_COSINE, "grading.check_cosine(cosine)")
    out = tmp_path / "grades.csv"
    args = [str(broken), str(missing), str(right), "--csv", str(out), "--timeout", "60"]
    assert grade_submissions.main(args) == 1
    captured = capsys.readouterr()
    assert f"{broken}: not a readable notebook" in captured.err
    assert f"{missing}: not a readable notebook" in captured.err
    assert f"{broken}: unreadable, not graded" in captured.out
    assert f"{right}: 1/1 checks passed" in captured.out
    with open(out, newline="", encoding="utf-8") as f:
        rows = [(r["notebook"], r["status"]) for r in csv.DictReader(f)]
    assert rows == [
        (str(broken), "unreadable"),
        (str(missing), "unreadable"),
        (str(right), "passed"),
    ]
