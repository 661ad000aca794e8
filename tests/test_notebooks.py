"""The course's house rules, checked on every solution notebook (nbval runs them separately)."""

import ast
import importlib
import inspect
import re
from types import ModuleType

import make_exercises
import nbformat
import pytest

from labhelpers import env

NOTEBOOKS = make_exercises.solution_paths()
MAX_CELL_LINES = 45  # "no cell over ~40 lines", with a little slack for long lists
# The closing quiz loads no model and measures nothing: it has no sizes and no claims to
# assert. It keeps every other rule.
QUIZ = "08_check_your_understanding.ipynb"


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


@pytest.fixture(params=NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def notebook(request):
    nb = nbformat.read(request.param, as_version=4)
    nb.metadata["path_name"] = request.param.name  # for the quiz's exemptions; never written
    return nb


def test_opens_with_what_you_will_learn(notebook):
    first = notebook.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    assert "What you will learn" in first.source


def test_first_code_cell_is_the_setup_cell(notebook):
    assert code_cells(notebook)[0].source == env.SETUP_CELL


def test_sizes_come_from_one_profile_table(notebook):
    if notebook.metadata["path_name"] == QUIZ:
        assert not any(
            "SIZES" in c.source or "load_model" in c.source for c in code_cells(notebook)
        )
        return
    assert any(
        "PROFILE = env.profile()" in c.source and "SIZES" in c.source for c in code_cells(notebook)
    )


def test_no_cell_is_too_long(notebook):
    long = [
        c.source.splitlines()[0]
        for c in notebook.cells
        if len(c.source.splitlines()) > MAX_CELL_LINES
    ]
    assert not long, f"cells over {MAX_CELL_LINES} lines: {long}"


def test_every_exercise_is_followed_by_its_check(notebook):
    cells = code_cells(notebook)
    for i, cell in enumerate(cells):
        if make_exercises.BEGIN in cell.source:
            following = cells[i + 1].source if i + 1 < len(cells) else ""
            assert re.search(r"grading\.check_\w+\(", following), (
                f"no check after exercise:\n{cell.source[:200]}"
            )


def test_claims_are_asserted_and_outputs_saved(notebook):
    if notebook.metadata["path_name"] != QUIZ:
        assert sum("assert " in c.source for c in code_cells(notebook)) >= 3
    assert all(c.execution_count is not None for c in code_cells(notebook)), (
        "commit notebooks executed"
    )
    errors = [o for c in code_cells(notebook) for o in c.outputs if o.output_type == "error"]
    assert not errors


def test_the_quiz_exists_and_closes_the_course():
    assert NOTEBOOKS[-1].name == QUIZ


def test_readme_maps_every_notebook_and_uses_the_repo_url():
    readme = (env.REPO_ROOT / "README.md").read_text(encoding="utf-8")
    # A markdown table ends at the first line that is not a row, so the map must be one block.
    tables = re.findall(r"(?:^\|.*\n)+", readme, flags=re.MULTILINE)
    (notebook_map,) = [t for t in tables if "| notebook |" in t]
    for path in NOTEBOOKS:
        assert f"| `{path.name}` |" in notebook_map, f"README's notebook map lacks {path.name}"
    badges = re.findall(
        r"https://(?:mybinder\.org/v2/gh|colab\.research\.google\.com/github)/([^/]+/[^/]+)/",
        readme,
    )
    assert badges and set(badges) == {env.REPO_URL.removeprefix("https://github.com/")}


def test_nbval_waits_long_enough_for_a_cells_last_outputs():
    """The root conftest raises nbval's 5 s wait for trailing outputs on every notebook cell."""

    class Recorder:
        def __init__(self):
            self.timeouts = []

        def pytest_collection_finish(self, session):
            self.timeouts += [item.output_timeout for item in session.items]

    recorder = Recorder()
    path = str(NOTEBOOKS[0])
    assert pytest.main(["--collect-only", "-q", path], plugins=[recorder]) == 0
    assert recorder.timeouts and min(recorder.timeouts) >= 30


LABHELPERS_IMPORT = re.compile(
    r"^from labhelpers(?:\.(\w+))? import (?:\(([^)]*)\)|([^\n#]+))", re.M
)


def _imported_names(source: str) -> list[tuple[str, str, str]]:
    """(module, name, alias) for every ``from labhelpers[.module] import name [as alias]``."""
    found = []
    for sub, grouped, inline in LABHELPERS_IMPORT.findall(source):
        for item in (grouped or inline).split(","):
            name, _, alias = item.strip().partition(" as ")
            if name:
                found.append(("labhelpers" + (f".{sub}" if sub else ""), name, alias or name))
    return found


def _member(module: str, name: str) -> object | None:
    """``module.name``, an attribute or a submodule; None when there is neither."""
    parent = importlib.import_module(module)
    if hasattr(parent, name):
        return getattr(parent, name)
    try:
        return importlib.import_module(f"{module}.{name}")
    except ImportError:
        return None


def test_every_library_name_a_notebook_uses_exists(notebook):
    # The full profile's cells never run in CI (they need GPT-2): at least every
    # labhelpers name they import or reach through a module (``io.load_pretrained_sae``)
    # must exist, so that a renamed function cannot break them unseen.
    source = "\n".join(c.source for c in code_cells(notebook))
    modules = {}
    for module, name, alias in _imported_names(source):
        member = _member(module, name)
        assert member is not None, f"{module} has no {name!r}"
        if isinstance(member, ModuleType):
            modules[alias] = member
    assert modules
    for alias, module in modules.items():
        assert not re.search(rf"^\s*{alias}\s*=", source, re.M), f"{alias} is reassigned"
        for attr in set(re.findall(rf"(?<![\w.]){alias}\.(\w+)", source)):
            assert _member(module.__name__, attr) is not None, f"{alias}.{attr} does not exist"


def _library_calls(source: str, names: dict[str, object]) -> list[tuple[ast.Call, object]]:
    """Each call of a labhelpers function or class in ``source``, with what it calls."""
    # IPython's ! and % lines are not Python; blank them (keeping line numbers)
    python = "\n".join("" if ln.lstrip()[:1] in "!%" else ln for ln in source.splitlines())
    calls = []
    for node in ast.walk(ast.parse(python)):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
            module = names.get(f.value.id)
            target = _member(module.__name__, f.attr) if isinstance(module, ModuleType) else None
        else:
            target = names.get(f.id) if isinstance(f, ast.Name) else None
        if callable(target) and not isinstance(target, ModuleType):
            calls.append((node, target))
    return calls


def test_every_library_call_in_a_notebook_fits_its_signature(notebook):
    # As above, for the full profile's cells: a call that passes a removed or misspelt
    # keyword, or too many arguments, fails here instead of on a learner's GPU.
    source = "\n".join(c.source for c in code_cells(notebook))
    names = {alias: _member(module, name) for module, name, alias in _imported_names(source)}
    calls = _library_calls(source, names)
    assert calls
    for node, target in calls:
        if any(isinstance(a, ast.Starred) for a in node.args) or any(
            k.arg is None for k in node.keywords
        ):
            continue  # f(*args, **kwargs): nothing to check statically
        try:
            inspect.signature(target).bind(*node.args, **{k.arg: None for k in node.keywords})
        except TypeError as error:
            pytest.fail(f"{ast.unparse(node)[:80]}: {error}")
