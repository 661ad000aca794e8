"""Test-wide settings: the quick profile and no network, unless the caller says otherwise.

nbval's kernels inherit this process's environment, so notebooks see these too.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("LAB_PROFILE", "quick")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).parent / "scripts"))
