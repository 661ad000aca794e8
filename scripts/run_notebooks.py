"""Execute solution notebooks in place in the quick profile, then regenerate their student versions.

python scripts/run_notebooks.py notebooks/00_orientation.ipynb [...]
python scripts/run_notebooks.py            # every solution notebook
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_exercises

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
MODEL_REF = re.compile(r"IPY_MODEL_([0-9a-f]{32})")


def stable_widget_ids(nb: Any) -> None:
    """Renumber the saved widget models so that re-running a notebook rewrites the same ids.

    ipywidgets names every model with a random UUID, so each run changed hundreds of lines
    of an unchanged notebook. Models are numbered in a deterministic order: the displayed
    views cell by cell, then each model's references (``IPY_MODEL_<id>``) in attribute
    order; models nothing references follow, ordered by their content.
    """
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    if not state:
        return
    order: list[str] = []

    def visit(model_id: str) -> None:
        if model_id in state and model_id not in order:
            order.append(model_id)
            for ref in MODEL_REF.findall(json.dumps(state[model_id]["state"], sort_keys=True)):
                visit(ref)

    for cell in nb.cells:
        for output in cell.get("outputs", []):
            view = output.get("data", {}).get(WIDGET_VIEW)
            if view:
                visit(view["model_id"])
    rest = [m for m in state if m not in order]

    def content(model_id: str) -> str:
        return MODEL_REF.sub("", json.dumps(state[model_id], sort_keys=True))

    for model_id in sorted(rest, key=content):
        visit(model_id)
    new = {old: f"{i:032x}" for i, old in enumerate(order)}
    text = re.sub("|".join(map(re.escape, new)), lambda m: new[m.group()], json.dumps(nb))
    renumbered = json.loads(text)
    nb.cells, nb.metadata = (
        nbformat.from_dict(renumbered["cells"]),
        nbformat.from_dict(renumbered["metadata"]),
    )


def execute(path: Path, timeout: int) -> float:
    """Run one notebook top to bottom in a fresh kernel; return the seconds it took."""
    nb = nbformat.read(path, as_version=4)
    os.environ.setdefault("LAB_PROFILE", "quick")
    start = time.perf_counter()
    # record_timing=False keeps wall-clock stamps out of the committed notebook.
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    stable_widget_ids(nb)
    nbformat.write(nb, path)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    args = parser.parse_args(argv)
    make_exercises.refuse_missing(parser, args.notebooks)  # before the first, minutes-long run
    paths = args.notebooks or make_exercises.solution_paths()
    for path in paths:
        seconds = execute(path, args.timeout)
        print(f"ran {path} in {seconds:.1f} s")
    return make_exercises.main([str(p) for p in paths])


if __name__ == "__main__":
    sys.exit(main())
