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

# nbval gives a cell's last outputs a hard-coded 5 s to arrive after the kernel has replied
# (computationalmodelling/nbval#136). On a busy two-core CI machine that wait ran out after
# notebook 04's long training cell; a minute costs nothing when the kernel is prompt.
NBVAL_OUTPUT_TIMEOUT_S = 60


def pytest_collection_modifyitems(items: list) -> None:
    from nbval.plugin import IPyNbCell

    for item in items:
        if isinstance(item, IPyNbCell):
            if not hasattr(item, "output_timeout"):
                raise RuntimeError(
                    "nbval no longer has IPyNbCell.output_timeout: update conftest.py"
                )
            item.output_timeout = NBVAL_OUTPUT_TIMEOUT_S
