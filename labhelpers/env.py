"""Where the course is running: profile, device, seeds, Colab/Binder, and the set-up cell.

The course has two profiles that share one code path:

* ``quick``: the bundled tiny model and corpus in ``data/``, sizes that run in minutes on
  a laptop CPU, no network. CI runs this one.
* ``full``: GPT-2 small and a Hugging Face dataset, sizes meant for a GPU.

``LAB_PROFILE=quick|full`` chooses; unset, the profile is ``full`` only when CUDA is
available *and* GPT-2's weights can be reached, else ``quick``.
"""

from __future__ import annotations

import os
import platform
import random
import sys
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np

Profile = Literal["quick", "full"]

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"

# The one place the repository's address lives; scripts/set_repo_url.py rewrites the
# README badges and every notebook's set-up cell from it.
REPO_URL = "https://github.com/sae-lab/sae-lab"

SETUP_CELL = f"""\
# Set-up: on Colab this fetches the course and installs its helpers; elsewhere it does nothing.
import os
import sys

if "google.colab" in sys.modules and not os.path.isdir("/content/sae-lab"):
    !git clone --depth 1 {REPO_URL} /content/sae-lab
    %pip install --quiet -e /content/sae-lab
    sys.path.insert(0, "/content/sae-lab")
    os.chdir("/content/sae-lab/notebooks")"""


def in_colab() -> bool:
    """True inside Google Colab."""
    return "google.colab" in sys.modules


def in_binder() -> bool:
    """True inside a Binder session (Binder sets ``BINDER_SERVICE_HOST`` or ``BINDER_REQUEST``)."""
    return any(
        k in os.environ for k in ("BINDER_SERVICE_HOST", "BINDER_REQUEST", "BINDER_REPO_URL")
    )


def device() -> str:
    """The best available torch device: ``"cuda"``, then ``"mps"``, then ``"cpu"``."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def _gpt2_reachable() -> bool:
    """True when GPT-2's config is in the local Hugging Face cache or can be fetched now."""
    try:
        from huggingface_hub import hf_hub_download

        hf_hub_download("gpt2", "config.json", local_files_only=True)
        return True
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        from huggingface_hub import hf_hub_download

        hf_hub_download("gpt2", "config.json", etag_timeout=5)
        return True
    except Exception:
        return False


@lru_cache(maxsize=1)
def _auto_profile() -> Profile:
    return "full" if device() == "cuda" and _gpt2_reachable() else "quick"


def profile() -> Profile:
    """The course profile: ``LAB_PROFILE`` when set, else ``full`` on CUDA with GPT-2 reachable."""
    chosen = os.environ.get("LAB_PROFILE", "").strip().lower()
    if chosen in ("quick", "full"):
        return chosen  # type: ignore[return-value]
    if chosen:
        raise ValueError(f"LAB_PROFILE must be 'quick' or 'full', not {chosen!r}")
    return _auto_profile()


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (CPU and CUDA), so random draws repeat.

    It also sets ``PYTHONHASHSEED``, which only subprocesses started afterwards read: this
    interpreter's string hashing (and so set order) was fixed when it started.
    """
    random.seed(seed)
    np.random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    try:
        import torch
    except ImportError:
        return
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def report() -> dict[str, str]:
    """Versions, device and profile: what to paste into a question on a forum."""
    import importlib.metadata as md

    rows = {"python": platform.python_version(), "platform": platform.platform(terse=True)}
    for package in ("numpy", "torch", "transformer-lens", "sae-lens", "transformers", "matplotlib"):
        try:
            rows[package] = md.version(package)
        except md.PackageNotFoundError:
            rows[package] = "not installed"
    rows["device"] = device()
    rows["profile"] = profile()
    rows["where"] = "colab" if in_colab() else "binder" if in_binder() else "local"
    return rows
