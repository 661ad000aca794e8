"""Execute solution notebooks in place in the quick profile, then regenerate their student versions.

python scripts/run_notebooks.py notebooks/00_orientation.ipynb [...]
python scripts/run_notebooks.py            # every solution notebook
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_exercises


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
    nbformat.write(nb, path)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    args = parser.parse_args(argv)
    paths = args.notebooks or make_exercises.solution_paths()
    for path in paths:
        seconds = execute(path, args.timeout)
        print(f"ran {path} in {seconds:.1f} s")
    return make_exercises.main([str(p) for p in paths])


if __name__ == "__main__":
    sys.exit(main())
