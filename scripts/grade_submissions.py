"""Grade a class's exercise notebooks: run each one, read every check, write a table.

    python scripts/grade_submissions.py submissions/*.ipynb --csv grades.csv

Each notebook runs top to bottom in a fresh kernel in the quick profile (unless
``LAB_PROFILE`` is already set), carrying on past errors, so one unfinished exercise does
not hide the rest. A file that is not a readable notebook is reported as "unreadable" and
grading goes on with the next; the exit status is then 1. A check cell (one that calls
``grading.check_<name>(...)``) passed when it printed its "✓" line; otherwise its result
is the error it raised: the check's hint, "not implemented yet", or whatever stopped it.
A check cell must be the single call the exercise notebook has; one with anything else in
it is reported as "edited" and not run for credit. That stops an edited cell from printing
its own "✓", not a student set on cheating (who could redefine ``grading`` earlier): like
the checks themselves, this grades honest work.

This runs the students' code with your permissions: do it in a container or a throwaway
account, as with any autograder.
"""

from __future__ import annotations

import argparse
import ast
import csv
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

CHECK = re.compile(r"grading\.check_(\w+)\(")


def is_bare_check(source: str) -> bool:
    """Whether ``source`` is one statement, ``grading.check_<name>(...)`` on plain names, as
    the exercise notebook writes it. Parsed rather than pattern-matched: a regular expression
    let ``grading.check_x(f) if False else print("✓ ...")`` through."""
    try:
        (statement,) = ast.parse(source).body
    except (SyntaxError, ValueError):  # not Python, or not exactly one statement
        return False
    call = statement.value if isinstance(statement, ast.Expr) else None
    return (
        isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and isinstance(call.func.value, ast.Name)
        and call.func.value.id == "grading"
        and call.func.attr.startswith("check_")
        and all(isinstance(a, ast.Name) for a in call.args)
        and all(isinstance(k.value, ast.Name) for k in call.keywords)
    )


@dataclass(frozen=True)
class CheckResult:
    """One check in one notebook (its path as given, since students' files often share a
    name in different folders): ``status`` is "passed", "failed", "not run" or "edited"; a
    file that is not a readable notebook gets one row, check "-", status "unreadable"."""

    notebook: str
    check: str
    status: str
    message: str


def _outcome(cell: Any) -> tuple[str, str]:
    """(status, message) of an executed check cell, from its outputs."""
    if not is_bare_check(cell.source):
        return "edited", "the check cell holds more than the check's call"
    if cell.get("execution_count") is None:
        return "not run", "the notebook stopped before this cell"
    for output in cell.outputs:
        if output.output_type == "error":
            return "failed", f"{output.ename}: {output.evalue}".strip()
    text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
    passed = next((line for line in text.splitlines() if line.startswith("✓ ")), None)
    if passed is None:
        return "failed", "the check printed no ✓ line"
    return "passed", passed


class UnreadableSubmissionError(ValueError):
    """A submitted file that cannot be graded because it cannot be read as a notebook."""


def grade_notebook(path: Path, timeout: int = 600) -> list[CheckResult]:
    """Run one submitted notebook and return the result of each check cell, in order.

    Raises ``UnreadableSubmissionError`` when ``path`` is missing or not a valid notebook.
    """
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except Exception as err:  # missing, not JSON, not a notebook: nbformat raises all kinds
        raise UnreadableSubmissionError(f"{path}: not a readable notebook ({err})") from err
    for cell in nb.cells:  # a stale output must not count as this run's result
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    os.environ.setdefault("LAB_PROFILE", "quick")
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        allow_errors=True,
        interrupt_on_timeout=True,  # an endless loop costs one cell, not the rest
        record_timing=False,
        resources={"metadata": {"path": str(path.resolve().parent)}},
    )
    try:
        client.execute()
    except (CellTimeoutError, DeadKernelError):
        pass  # the kernel died or would not stop: the cells that ran keep their outputs
    results = []
    for cell in nb.cells:
        match = CHECK.search(cell.source) if cell.cell_type == "code" else None
        if match:
            results.append(CheckResult(str(path), match.group(1), *_outcome(cell)))
    return results


def write_csv(results: list[CheckResult], path: Path) -> None:
    """One row per notebook and check: notebook, check, status, message."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["notebook", "check", "status", "message"])
        writer.writerows((r.notebook, r.check, r.status, r.message) for r in results)


def summary(results: list[CheckResult]) -> str:
    """A line per notebook: checks passed out of checks found, and which failed."""
    lines = []
    for name in dict.fromkeys(r.notebook for r in results):
        mine = [r for r in results if r.notebook == name]
        if mine[0].status == "unreadable":
            lines.append(f"{name}: unreadable, not graded")
            continue
        passed = sum(r.status == "passed" for r in mine)
        missed = ", ".join(r.check for r in mine if r.status != "passed")
        lines.append(
            f"{name}: {passed}/{len(mine)} checks passed" + (f" (not: {missed})" if missed else "")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--csv", type=Path, help="write one row per notebook and check here")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args(argv)
    results, unreadable = [], 0
    for path in args.notebooks:
        try:
            found = grade_notebook(path, args.timeout)
        except UnreadableSubmissionError as err:
            # One broken file must not stop the class's grading; it gets a row to follow up.
            print(err, file=sys.stderr)
            found, unreadable = (
                [CheckResult(str(path), "-", "unreadable", str(err))],
                unreadable + 1,
            )
        if not found:
            print(f"{path}: no grading.check_ cells found", file=sys.stderr)
        results += found
    print(summary(results))
    if args.csv:
        write_csv(results, args.csv)
        print(f"wrote {args.csv}")
    return 1 if unreadable else 0


if __name__ == "__main__":
    sys.exit(main())
