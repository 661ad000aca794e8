"""Point the course at another repository (a fork, a classroom copy).

The address lives in labhelpers/env.py (REPO_URL); this rewrites it there and in the
places derived from it: the README's launch badges and every notebook's set-up cell.

    python scripts/set_repo_url.py https://github.com/you/sae-lab
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import make_exercises

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", argv[0]):
        print(
            "usage: python scripts/set_repo_url.py https://github.com/OWNER/REPO", file=sys.stderr
        )
        return 2
    new = argv[0]
    env_py = ROOT / "labhelpers" / "env.py"
    old = re.search(r'^REPO_URL = "(.+)"$', env_py.read_text(encoding="utf-8"), re.M).group(1)
    old_slug, new_slug = (
        old.removeprefix("https://github.com/"),
        new.removeprefix("https://github.com/"),
    )
    files = [env_py, ROOT / "README.md", *sorted((ROOT / "notebooks").glob("*.ipynb"))]
    for path in files:
        text = path.read_text(encoding="utf-8")
        path.write_text(
            text.replace(old, new).replace(f"/{old_slug}/", f"/{new_slug}/"), encoding="utf-8"
        )
    print(f"{old} -> {new} in {len(files)} files")
    return make_exercises.main([])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
