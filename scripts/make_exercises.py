"""Write the student notebooks in notebooks/exercises/ from the solution notebooks.

Inside a code cell, everything between ``### BEGIN SOLUTION`` and ``### END SOLUTION``
(nbgrader's markers) becomes a stub that raises ``NotImplementedError``; a
``### HINT: ...`` line inside the block becomes the stub's hint. Outputs are cleared.

    python scripts/make_exercises.py            # write every student notebook
    python scripts/make_exercises.py --check    # exit 1 if any is out of date
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "notebooks"
EXERCISES = SOLUTIONS / "exercises"
BEGIN, END, HINT = "### BEGIN SOLUTION", "### END SOLUTION", "### HINT:"
BANNER = (
    "> **Exercise version.** Fill in each `raise NotImplementedError` and run the check "
    "below it. The solutions are in the notebook of the same name one folder up.\n\n"
)


def stub_source(source: str) -> str:
    """Replace each solution block in a cell's source by a hinted stub."""
    out: list[str] = []
    block: list[str] | None = None
    indent = ""
    function = None  # the def the block sits in, named in the stub's error
    for line in source.splitlines():
        stripped = line.strip()
        if block is None and (match := re.match(r"\s*def (\w+)\(", line)):
            function = match.group(1)
        if stripped == BEGIN:
            if block is not None:
                raise ValueError(f"nested {BEGIN!r} in:\n{source}")
            block, indent = [], line[: len(line) - len(line.lstrip())]
        elif stripped == END:
            if block is None:
                raise ValueError(f"{END!r} without {BEGIN!r} in:\n{source}")
            hints = [b.strip()[len(HINT) :].strip() for b in block if b.strip().startswith(HINT)]
            out.append(f"{indent}# YOUR CODE HERE")
            out.extend(f"{indent}# Hint: {hint}" for hint in hints)
            unwritten = f"{function}() is not written yet: " if function and indent else ""
            message = f"exercise: {unwritten}replace this line with your code"
            out.append(f'{indent}raise NotImplementedError("{message}")')
            block = None
        elif block is not None:
            block.append(line)
        else:
            out.append(line)
    if block is not None:
        raise ValueError(f"{BEGIN!r} without {END!r} in:\n{source}")
    return "\n".join(out)


def student_notebook(solution: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The student version of a solution notebook: stubbed exercises, no outputs."""
    nb = copy.deepcopy(solution)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = stub_source(cell.source)
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
        elif BEGIN in cell.source:
            raise ValueError("solution markers are supported in code cells only")
    # Saved widget states (the solution run's progress bars) describe outputs that are gone.
    nb.metadata.pop("widgets", None)
    first = nb.cells[0] if nb.cells else None
    if first is None or first.cell_type != "markdown":  # the banner needs a cell of its own
        nb.cells.insert(0, nbformat.v4.new_markdown_cell(BANNER.rstrip(), id="exercise-banner"))
    elif not first.source.startswith(BANNER):
        first.source = BANNER + first.source
    return nb


def solution_paths() -> list[Path]:
    return sorted(p for p in SOLUTIONS.glob("*.ipynb") if re.match(r"\d\d_", p.name))


def expected_text(solution_path: Path) -> str:
    """The exact file text the student notebook for ``solution_path`` should have."""
    nb = student_notebook(nbformat.read(solution_path, as_version=4))
    return nbformat.writes(nb) + "\n"


def refuse_missing(parser: argparse.ArgumentParser, paths: list[Path]) -> None:
    """A usage error naming the first path that is not a notebook file: raised up front,
    not as a traceback halfway through the list."""
    for path in paths:
        if not path.is_file():
            parser.error(f"{path}: no such notebook")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="solution notebooks (default: all)")
    parser.add_argument("--check", action="store_true", help="only report stale student notebooks")
    args = parser.parse_args(argv)
    refuse_missing(parser, args.notebooks)  # before writing anything
    stale = []
    for path in args.notebooks or solution_paths():
        target = EXERCISES / path.name
        text = expected_text(path)
        if target.exists() and target.read_text(encoding="utf-8") == text:
            continue
        stale.append(target)
        if not args.check:
            EXERCISES.mkdir(exist_ok=True)
            target.write_text(text, encoding="utf-8")
            print(f"wrote {target.relative_to(ROOT)}")
    if args.check and stale:
        print("stale student notebooks (run scripts/make_exercises.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
