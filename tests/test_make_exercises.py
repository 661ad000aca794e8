import make_exercises
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

SOLUTION = '''def cosine(a, b):
    """Cosine similarity."""
    ### BEGIN SOLUTION
    ### HINT: divide the dot product by both norms.
    return a @ b / (norm(a) * norm(b))
    ### END SOLUTION'''


def test_solution_block_becomes_hinted_stub():
    stub = make_exercises.stub_source(SOLUTION)
    assert stub.splitlines() == [
        "def cosine(a, b):",
        '    """Cosine similarity."""',
        "    # YOUR CODE HERE",
        "    # Hint: divide the dot product by both norms.",
        '    raise NotImplementedError("exercise: cosine() is not written yet: '
        'replace this line with your code")',
    ]
    assert "norm(a) * norm(b)" not in stub


def test_a_stub_names_its_function_so_later_cells_point_back_to_it():
    # a later cell that calls an unsolved exercise fails with this message, far from the exercise
    namespace = {"norm": abs}
    exec(make_exercises.stub_source(SOLUTION), namespace)
    with pytest.raises(NotImplementedError, match=r"cosine\(\) is not written yet"):
        namespace["cosine"](1, 2)
    top_level = make_exercises.stub_source("### BEGIN SOLUTION\nanswers = [1]\n### END SOLUTION")
    assert 'NotImplementedError("exercise: replace this line with your code")' in top_level


def test_code_outside_blocks_is_kept_and_several_blocks_work():
    source = "x = 1\n### BEGIN SOLUTION\ny = 2\n### END SOLUTION\nz = 3\n### BEGIN SOLUTION\nw = 4\n### END SOLUTION"
    stub = make_exercises.stub_source(source)
    assert stub.startswith("x = 1\n# YOUR CODE HERE\nraise NotImplementedError")
    assert "z = 3" in stub and "y = 2" not in stub and "w = 4" not in stub
    assert stub.count("NotImplementedError") == 2


@pytest.mark.parametrize(
    "broken",
    [
        "### BEGIN SOLUTION\nx = 1",
        "x = 1\n### END SOLUTION",
        "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION",
    ],
)
def test_unbalanced_markers_are_an_error(broken):
    with pytest.raises(ValueError, match="SOLUTION"):
        make_exercises.stub_source(broken)


def test_student_notebook_clears_outputs_and_adds_banner():
    cell = new_code_cell(
        SOLUTION, execution_count=3, outputs=[nbformat.v4.new_output("stream", text="hi")]
    )
    nb = new_notebook(cells=[new_markdown_cell("# Title"), cell])
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    student = make_exercises.student_notebook(nb)
    assert student.cells[0].source.startswith("> **Exercise version.**")
    assert student.cells[1].outputs == [] and student.cells[1].execution_count is None
    assert "widgets" not in student.metadata  # the states of outputs that are gone
    assert nb.cells[1].outputs and "widgets" in nb.metadata, "the solution is left untouched"


@pytest.mark.parametrize("cells", [[], [new_code_cell("x = 1")]])
def test_a_notebook_that_does_not_open_with_markdown_still_gets_the_banner(cells):
    student = make_exercises.student_notebook(new_notebook(cells=cells))
    assert student.cells[0].source.startswith("> **Exercise version.**")
    assert student.cells[0].id == "exercise-banner"  # fixed, so --check stays stable
    assert len(student.cells) == len(cells) + 1


def test_stubbed_notebook_executes_to_not_implemented():
    namespace = {"norm": abs}
    exec(make_exercises.stub_source(SOLUTION), namespace)
    with pytest.raises(NotImplementedError):
        namespace["cosine"](1, 2)


def test_committed_student_notebooks_are_up_to_date():
    solutions = make_exercises.solution_paths()
    assert solutions, "no solution notebooks found"
    for path in solutions:
        target = make_exercises.EXERCISES / path.name
        assert target.exists(), f"missing {target}: run python scripts/make_exercises.py"
        assert target.read_text(encoding="utf-8") == make_exercises.expected_text(path), (
            f"{target.name} is stale: run python scripts/make_exercises.py"
        )
    extra = {p.name for p in make_exercises.EXERCISES.glob("*.ipynb")} - {p.name for p in solutions}
    assert not extra, f"student notebooks without a solution notebook: {extra}"


def test_a_missing_notebook_is_named_and_nothing_is_written(tmp_path, capsys):
    missing = tmp_path / "00_nope.ipynb"
    with pytest.raises(SystemExit):
        make_exercises.main([str(missing)])
    assert f"{missing}: no such notebook" in capsys.readouterr().err
    assert not (make_exercises.EXERCISES / missing.name).exists()
