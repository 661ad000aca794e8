"""Grade a class's exercise notebooks: run each one, read every check, write a table.

    python scripts/grade_submissions.py submissions/*.ipynb --csv grades.csv

Each notebook runs top to bottom in a fresh kernel in the quick profile, carrying on past
errors, so one unfinished exercise does not hide the rest. A check cell (one that calls
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
CHECK_CELL = re.compile(r"\s*grading\.check_\w+\([^\n]*\)\s*")  # the call alone, as written


@dataclass(frozen=True)
class CheckResult:
    """One check in one notebook (its path as given, since students' files often share a
    name in different folders): ``status`` is "passed", "failed", "not run" or "edited"."""

    notebook: str
    check: str
    status: str
    message: str


def _outcome(cell: Any) -> tuple[str, str]:
    """(status, message) of an executed check cell, from its outputs."""
    if not CHECK_CELL.fullmatch(cell.source):
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


def grade_notebook(path: Path, timeout: int = 600) -> list[CheckResult]:
    """Run one submitted notebook and return the result of each check cell, in order."""
    nb = nbformat.read(path, as_version=4)
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
    results = []
    for path in args.notebooks:
        found = grade_notebook(path, args.timeout)
        if not found:
            print(f"{path}: no grading.check_ cells found", file=sys.stderr)
        results += found
    print(summary(results))
    if args.csv:
        write_csv(results, args.csv)
        print(f"wrote {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
